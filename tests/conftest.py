"""Shared fixtures: a mesh secret and a factory of real node processes cleaned up by PID."""

from __future__ import annotations

import secrets
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmlab_grpc.inference.ray_head import RayHead
from tests.helpers import NodeProcess, spawn_node

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def secret() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    """One Ray head for the whole test session, as `llmlab up` runs one for its mesh.

    A node alone starts its own Ray cluster (seconds, ~0.5 GB, and on a loaded 2-core
    machine sometimes a raylet start-up timeout); test nodes that need Ray join this one.
    """
    head = RayHead.start()
    yield head
    head.stop()


def ray_env(head: RayHead) -> dict[str, str]:
    """Environment that makes a node process join ``head``."""
    return {**head.node_env(), "LLMLAB_RAY_ADDRESS": head.address}


def needs_ray(args: tuple[str, ...], env: dict[str, str]) -> bool:
    """The llm role always runs on Ray (every backend is hosted by an actor); the cache role only
    with the Ray store."""
    roles = args[args.index("--roles") + 1].split(",") if "--roles" in args else ["llm"]  # default: all roles
    ray_cache = "--cache-store" in args and args[args.index("--cache-store") + 1] == "ray"
    return "llm" in roles or ray_cache or env.get("LLMLAB_CACHE_STORE") == "ray"


@pytest.fixture
def node_factory(secret: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., NodeProcess]]:
    """``node_factory(name, *flags, secret=...)`` starts a node; every node is stopped after the test."""
    started: list[NodeProcess] = []
    ARTIFACTS.mkdir(exist_ok=True)

    def make(name: str, *args: str, secret: str = secret, env: dict[str, str] | None = None,
             **kwargs: object) -> NodeProcess:
        # Nodes under test cache in memory unless a test passes `--cache-store ray` (flags beat
        # the environment) or its own LLMLAB_CACHE_STORE; those that need Ray join the session's.
        env = {"LLMLAB_CACHE_STORE": "memory", **(env or {})}
        if needs_ray(args, env):
            env = {**ray_env(request.getfixturevalue("ray_head")), **env}
        node = spawn_node(name, secret, *args, env=env, log_dir=ARTIFACTS, **kwargs)  # type: ignore[arg-type]
        started.append(node)
        return node

    yield make
    for node in started:
        node.stop(signal.SIGTERM, timeout=10)
