"""Models hosted on Ray actors: one actor per model, tokens streamed back as they are made.

Each served model lives in a ``ModelActor`` that loads it once in ``__init__``. Its
``generate`` is a Ray *streaming generator* (``num_returns="streaming"``): every
yielded piece becomes an ``ObjectRef`` the node awaits at once, so the first token
reaches the gRPC client while the rest is still being generated.

Concurrency is bounded twice. In the actor, the ``gen`` concurrency group runs
``Backend.parallel`` generations at a time (1 for llama.cpp, whose context is not
shareable) and Ray queues the rest; ``describe`` runs in its own group so it answers
while a generation runs. In the node, at most ``parallel + llm_max_queued``
generations per model are admitted; the next gets RESOURCE_EXHAUSTED at once rather
than waiting behind an unbounded queue.

Actors are named ``llmlab-llm-<node_id>-<model>`` in the ``llmlab`` namespace (so
``ray list actors`` shows whose they are) and are *not* detached: Ray kills them
when the node process that owns them exits, even by SIGKILL, so a dead node leaves
no model behind in a shared cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import ray
from ray.exceptions import RayActorError, RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from llmlab_grpc.inference.backends import BackendOptions, ModelLoadError, backend_class
from llmlab_grpc.inference.errors import InferenceError
from llmlab_grpc.inference.types import Event, GenerationError, Message, ModelDescription, Params, Usage

log = logging.getLogger(__name__)

NAMESPACE = "llmlab"
ACTOR_START_TIMEOUT_S = 120.0
NAME_FREE_TIMEOUT_S = 15.0
"""How long to wait for a crashed predecessor's actor (same node id) to be reaped before giving up."""


class ModelActor:
    """Runs in a Ray worker process: owns one loaded backend."""

    def __init__(self, kind: str, spec: str, options: BackendOptions) -> None:
        self.error = ""
        self.description: ModelDescription | None = None
        try:
            self.backend = backend_class(kind)(spec, options)
            self.description = self.backend.load()
        except ModelLoadError as exc:
            # Kept, not raised: the node reads it with describe() and reports it verbatim.
            self.error = str(exc)

    @ray.method(concurrency_group="meta")
    def describe(self) -> ModelDescription | str:
        """The loaded model, or why it could not be loaded."""
        return self.description if self.description is not None else self.error

    @ray.method(concurrency_group="gen", num_returns="streaming")
    def generate(self, messages: list[Message], params: Params) -> Iterator[Event]:
        try:
            yield from coalesce_text(self.backend.generate(messages, params))
        except Exception as exc:  # a backend bug must end this stream, not the actor
            log.exception("generation failed")
            yield GenerationError("INTERNAL", f"{type(exc).__name__}: {exc}")

    @ray.method(concurrency_group="meta")
    def ray_node(self) -> str:
        """The id of the Ray node this actor was placed on."""
        return str(ray.get_runtime_context().get_node_id())

    @ray.method(concurrency_group="meta")
    def shutdown(self) -> None:
        self.backend.close()


COALESCE_S = 0.05
"""Text pieces produced within this long of the last one sent travel together.

Every yielded item is a Ray object (put, announced, fetched): on a 2-core machine that
work is taken from the model's own threads, and one object per token cost 10-15% of
tokens/s. The first piece still goes out at once (time to first token is untouched), and
50 ms (20 updates a second) still reads as a smooth stream.
"""


def coalesce_text(events: Iterator[Event], interval_s: float = COALESCE_S) -> Iterator[Event]:
    """Merge consecutive text pieces so that at most one leaves per ``interval_s``; others pass."""
    pending: list[str] = []
    last_sent = 0.0
    for event in events:
        if isinstance(event, str):
            pending.append(event)
            now = time.monotonic()
            if now - last_sent >= interval_s:
                yield "".join(pending)
                pending.clear()
                last_sent = now
            continue
        if pending:
            yield "".join(pending)
            pending.clear()
        yield event
    if pending:
        yield "".join(pending)


_remote_classes: dict[int, Any] = {}


def _remote_actor_class(parallel: int) -> Any:
    """``ModelActor`` as a Ray actor class whose ``gen`` group runs ``parallel`` generations."""
    if parallel not in _remote_classes:
        # Ray's typed overloads of ray.remote omit the actor option concurrency_groups (it works at run time).
        options = ray.remote(concurrency_groups={"gen": parallel, "meta": 2})  # type: ignore[call-overload]
        _remote_classes[parallel] = options(ModelActor)
    return _remote_classes[parallel]


def actor_name(node_id: str, model: str) -> str:
    return "llmlab-llm-" + re.sub(r"[^A-Za-z0-9._:-]", "_", f"{node_id}-{model}")


@dataclass
class ServedModel:
    """A model this node serves and the node-side bookkeeping of its actor."""

    name: str
    spec: str
    actor: Any
    description: ModelDescription
    capacity: int
    in_flight: int = 0
    ray_node_id: str = ""
    """The Ray node the actor was placed on."""


class RayHost:
    """The node-side half: starts the actors, admits, streams and cancels generations."""

    def __init__(self, node_id: str, backend: str, specs: list[str], options: BackendOptions,
                 max_queued: int, on_load: Callable[[int], None] = lambda delta: None) -> None:
        self.node_id = node_id
        self.backend = backend
        self.specs = specs
        self.options = options
        self.max_queued = max_queued
        self._on_load = on_load
        self.served: dict[str, ServedModel] = {}

    async def start(self) -> None:
        """Create and load one actor per model; ``ModelLoadError`` if one cannot be served."""
        cls = backend_class(self.backend)
        here = ray.get_runtime_context().get_node_id()
        for spec in self.specs:
            name = cls.served_name(spec)
            if name in self.served:
                raise ModelLoadError(f"model {name!r} is configured twice")
            actor = await self._create(cls.parallel, name, spec, here)
            try:
                described = await asyncio.wait_for(_await(actor.describe.remote()), ACTOR_START_TIMEOUT_S)
            except (RayError, TimeoutError) as exc:
                ray.kill(actor, no_restart=True)
                raise ModelLoadError(f"the Ray actor for model {name!r} did not start: {exc}") from exc
            if isinstance(described, str):
                ray.kill(actor, no_restart=True)
                raise ModelLoadError(described)
            placed = await asyncio.wait_for(_await(actor.ray_node.remote()), ACTOR_START_TIMEOUT_S)
            self.served[name] = ServedModel(name, spec, actor, described, cls.parallel + self.max_queued,
                                            ray_node_id=placed)
            log.info("serving %s (%s) on Ray actor %s, Ray node %s", name, self.backend,
                     actor_name(self.node_id, name), ray_node_label(placed))
            if placed != here:
                log.warning("the actor of %s runs on Ray node %s, not on this process's Ray node %s: its "
                            "tokens cross the network", name, ray_node_label(placed), ray_node_label(here))

    async def _create(self, parallel: int, name: str, spec: str, ray_node_id: str) -> Any:
        """The actor, placed on this process's Ray node: the one on this machine (hard affinity).

        Soft affinity fell back to the head's node when the cluster's view of a just-joined
        node lagged (seen on the two-host LAN test), and every token then crossed the network.
        This node is alive by construction (the driver is attached to it) and the actor asks
        for no resources, so a hard affinity cannot leave it pending.
        """
        options = {
            "name": actor_name(self.node_id, name),
            "namespace": NAMESPACE,
            "num_cpus": 0,  # admission is ours; a CPU reservation would leave later nodes' models pending
            "max_restarts": 2,  # a crashed runtime reloads; the stream it was serving fails
            "max_task_retries": 0,  # never replay half a generation
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=ray_node_id, soft=False),
        }
        deadline = time.monotonic() + NAME_FREE_TIMEOUT_S
        while True:
            try:
                return _remote_actor_class(parallel).options(**options).remote(self.backend, spec, self.options)
            except ValueError as exc:  # name taken
                if time.monotonic() > deadline:
                    raise ModelLoadError(
                        f"Ray actor {options['name']} already exists in namespace {NAMESPACE}: is another "
                        f"node with node_id {self.node_id!r} serving {name!r} in this Ray cluster?") from exc
                await asyncio.sleep(0.5)

    def models(self) -> list[ModelDescription]:
        return [s.description for s in self.served.values()]

    async def stream(self, model: str, messages: list[Message], params: Params) -> AsyncIterator[Event]:
        """Text pieces then one ``Usage``; every failure is an ``InferenceError``."""
        served = self.served[model]
        if served.in_flight >= served.capacity:
            raise InferenceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"model {model} on node {self.node_id} is busy: {served.in_flight} generations running or "
                f"queued (limit {served.capacity} = {served.capacity - self.max_queued} at once + "
                f"{self.max_queued} queued, --llm-max-queued); retry later or ask another llm node")
        served.in_flight += 1
        self._on_load(+1)
        generator = served.actor.generate.remote(messages, params)
        finished = False
        try:
            async for ref in generator:
                event = await ref
                if isinstance(event, GenerationError):
                    finished = True
                    raise InferenceError.named(event.code, event.message)
                if isinstance(event, Usage):
                    finished = True
                yield event
            if not finished:
                raise InferenceError(grpc.StatusCode.INTERNAL, f"the runtime of {model} ended without usage")
        except RayActorError as exc:
            finished = True
            raise InferenceError(grpc.StatusCode.UNAVAILABLE,
                                 f"the Ray actor running {model} on node {self.node_id} died: "
                                 f"{_first_line(exc)}; retry (it restarts) or ask another llm node") from exc
        except RayTaskError as exc:
            finished = True
            raise InferenceError(grpc.StatusCode.INTERNAL, f"{model} failed: {_first_line(exc)}") from exc
        finally:
            if not finished:  # the caller went away (client cancel, deadline): stop the work too
                with contextlib.suppress(Exception):
                    ray.cancel(generator)
            served.in_flight -= 1
            self._on_load(-1)

    async def stop(self) -> None:
        """Release the runtimes and remove the actors."""
        for served in self.served.values():
            with contextlib.suppress(RayError, TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(_await(served.actor.shutdown.remote()), 5.0)
            with contextlib.suppress(RayError, ValueError):
                ray.kill(served.actor, no_restart=True)
        self.served.clear()


def ray_node_label(node_id: str) -> str:
    """``<ip> (<id prefix>)`` of a Ray node, for logs; the id alone when the cluster does not list it."""
    for node in ray.nodes():  # type: ignore[no-untyped-call]  # Ray leaves ray.nodes unannotated
        if node.get("NodeID") == node_id:
            return f"{node.get('NodeManagerAddress')} ({node_id[:8]})"
    return node_id[:8]


async def _await(ref: Any) -> Any:
    return await ref


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = ["NAMESPACE", "ModelActor", "RayHost", "ServedModel", "actor_name"]
