"""Shared pieces of the cache tests: a clock tests move by hand, Ray once per session."""

from __future__ import annotations

from typing import Any

import pytest


class FakeClock:
    """Seconds since the epoch that only move when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def ray_session() -> Any:
    """Ray for this test process. ``ensure_ray`` starts it once per process and is a no-op
    afterwards, so every module may use this fixture; it is left running for later tests
    (Ray's own atexit hook stops the local cluster with the process)."""
    from llmlab_grpc.ray_runtime import ensure_ray

    return ensure_ray(num_cpus=2)
