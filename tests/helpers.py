"""Test helpers: polling, and the node processes of llmlab_grpc.procs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from llmlab_grpc.procs import LISTEN_RE, NodeProcess, spawn_node

__all__ = ["LISTEN_RE", "NodeProcess", "spawn_node", "wait_until"]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what} (last value: {last!r})")
