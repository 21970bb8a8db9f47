"""Shared fixtures: a mesh secret and a factory of real node processes cleaned up by PID."""

from __future__ import annotations

import secrets
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import NodeProcess, spawn_node

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def secret() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture
def node_factory(secret: str) -> Iterator[Callable[..., NodeProcess]]:
    """``node_factory(name, *flags, secret=...)`` starts a node; every node is stopped after the test."""
    started: list[NodeProcess] = []
    ARTIFACTS.mkdir(exist_ok=True)

    def make(name: str, *args: str, secret: str = secret, env: dict[str, str] | None = None,
             **kwargs: object) -> NodeProcess:
        # The cache role's default store is Ray, and a node alone starts its own Ray cluster
        # (seconds and ~0.5 GB each): nodes under test cache in memory unless a test passes
        # `--cache-store ray` (flags beat the environment) or its own LLMLAB_CACHE_STORE.
        env = {"LLMLAB_CACHE_STORE": "memory", **(env or {})}
        node = spawn_node(name, secret, *args, env=env, log_dir=ARTIFACTS, **kwargs)  # type: ignore[arg-type]
        started.append(node)
        return node

    yield make
    for node in started:
        node.stop(signal.SIGTERM, timeout=10)
