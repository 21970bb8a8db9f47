"""How the planner reaches the mesh: tools, cache and models, each on a node that has the role.

Every call goes to a node chosen and failed over by the one peer-call policy
(``mesh/peer_calls.py``: this node first when it has the role, then the least busy
peers, llm nodes by expected wait; the next node on UNAVAILABLE, DEADLINE_EXCEEDED or
RESOURCE_EXHAUSTED) over the node's authenticated channels. Going through gRPC even to
this node keeps one code path, one set of status codes and one trace for local and
remote work alike; the one exception is this node's own cache, read and written
in-process, because a cache hit is the path whose latency matters most.

``MeshCalls`` is given the ports it uses (``llmlab_grpc/ports.py``): this node's
``LocalNode``, a read-only peers view, the channel pool, the node's load, the models once
served here, and this node's cache when it has the role.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from llmlab_grpc.cache.keys import cache_key
from llmlab_grpc.mesh.peer_calls import Candidate, Failover, PeerCallError, PeerCalls, role_candidates
from llmlab_grpc.planner.cache_controls import CacheControls
from llmlab_grpc.proto.llmlab.v1 import (
    cache_pb2,
    cache_pb2_grpc,
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    tool_executor_pb2,
    tool_executor_pb2_grpc,
)
from llmlab_grpc.tools.convert import from_struct, to_struct

if TYPE_CHECKING:
    from llmlab_grpc.cache.entry import CachedAnswer
    from llmlab_grpc.ports import Channels, LoadView, LocalNode, ModelMemory, PeersView, PlannerCache

log = logging.getLogger(__name__)
S = TypeVar("S")
"""A gRPC stub class (its async variant, made on an aio channel)."""

__all__ = ["Candidate", "Failover", "MeshCallError", "MeshCalls", "result_text"]


class MeshCallError(Exception):
    """A step could not be done; ``code`` is the gRPC status to report (None: the step's own failure)."""

    def __init__(self, code: grpc.StatusCode | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class MeshCalls:
    """Calls from a planner (or the OpenAI gateway) of node ``me`` to the nodes that can serve them."""

    me: LocalNode
    peers: PeersView
    channels: Channels
    load: LoadView
    """This node's own load (its llm role's queue and speed rank it among llm candidates)."""
    model_memory: ModelMemory
    first_token_timeout_s: float
    heartbeat_interval_s: float
    local_cache: PlannerCache | None = None
    """This node's cache when it has the role: hits then cost no RPC."""
    policy: PeerCalls = field(default_factory=lambda: PeerCalls("node"))
    """Ranking, failover and the generations/calls this planner has running on each node."""

    @property
    def in_flight(self) -> dict[str, int]:
        """node_id -> calls this planner has running there now (live, unlike heartbeats)."""
        return self.policy.in_flight

    def suspect(self, node_id: str) -> None:
        self.policy.suspect(node_id)

    # -- choosing nodes ---------------------------------------------------------------
    def candidates(self, role: str, model: str = "") -> list[Candidate]:
        """Nodes with ``role`` (and ``model``), ranked by the peer-call policy (suspects last).

        llm nodes are ordered by expected wait (``mesh/spreading.py``: queue and measured
        speed); other roles this node first, then by load.
        """
        me = self.me
        llm = role == "llm"
        here = None
        if role in me.roles and (not model or model in me.models):
            load = self.load.proto()
            here = Candidate(me.node_id, me.name, me.address, local=True,
                             busy=load.generations_running if llm else 0, speed=load.tokens_per_second)
        found = role_candidates(self.peers.with_role(role), role, here=here, model=model,
                                interval_s=self.heartbeat_interval_s)
        return self.policy.rank(found, spread=llm)

    def default_model(self) -> str:
        """This node's first model, else the first live llm peer's, else the last default seen.

        The last one keeps a cached answer askable when no llm node is alive: the model is
        part of the cache key.
        """
        if self.me.models:
            return self.me.models[0]
        for peer in self.peers.with_role("llm"):
            if peer.info.models:
                return peer.info.models[0]
        return self.model_memory.default

    def models(self) -> list[str]:
        """Models served by a live node now."""
        names = list(self.me.models)
        for peer in self.peers.with_role("llm"):
            names.extend(m for m in peer.info.models if m not in names)
        return names

    def known_models(self) -> list[str]:
        """Models served now, then those served earlier in this mesh (offline now, maybe still cached)."""
        names = self.models()
        names.extend(m for m in self.model_memory.names() if m not in names)
        return names

    def is_live(self, model: str) -> bool:
        return bool(model) and bool(self.candidates("llm", model))

    def offline_error(self, model: str) -> MeshCallError:
        """UNAVAILABLE for a model once served here whose nodes are all gone (a cache miss needs one)."""
        live = ", ".join(self.models()) or "none"
        return MeshCallError(grpc.StatusCode.UNAVAILABLE,
                             f"model {model!r} is offline: no node serving it is alive, and the answer is not "
                             f"cached (models alive now: {live}); start an llm node serving {model!r} and retry")

    # -- tools ------------------------------------------------------------------------
    def _stub(self, factory: Callable[[grpc.aio.Channel], S], candidate: Candidate) -> S:
        return factory(self.channels.get(candidate.address))

    async def execute_tool(self, tool: str, arguments: dict[str, Any], task_id: str
                           ) -> tool_executor_pb2.ExecuteResponse:
        """Run a tool on a tools node (whose router may forward it to the node that has it)."""
        request = tool_executor_pb2.ExecuteRequest(tool=tool, arguments=to_struct(arguments), task_id=task_id)
        try:
            reply, _, failed = await self.policy.call(
                self.candidates("tools"),
                lambda c: self._stub(tool_executor_pb2_grpc.ToolExecutorStub, c).Execute(request, timeout=120),
                what="tools node")
        except PeerCallError as exc:
            if exc.exhausted and not exc.failed_over:
                raise MeshCallError(grpc.StatusCode.UNAVAILABLE,
                                    f"no node with the tools role is alive to run {tool}") from exc
            if exc.exhausted:
                raise MeshCallError(exc.code, f"no tools node could run {tool}: {exc.tried()}") from exc
            raise MeshCallError(exc.code, exc.details) from exc
        reply.failed_over[:0] = [f.node_id for f in failed]
        return reply

    async def tool_catalogue(self) -> dict[str, dict[str, Any]]:
        """name → {description, input_schema} of every tool in the mesh ({} when no tools node answers)."""
        try:
            reply, _, _ = await self.policy.call(
                self.candidates("tools"),
                lambda c: self._stub(tool_executor_pb2_grpc.ToolExecutorStub, c).ListTools(
                    tool_executor_pb2.ListToolsRequest(), timeout=10),
                what="tools node")
        except PeerCallError:
            return {}
        return {t.name: {"description": t.description, "input_schema": from_struct(t.input_schema)}
                for t in reply.tools}

    # -- cache ------------------------------------------------------------------------
    def has_cache(self) -> bool:
        """Whether some cache can be asked: this node's own (no peer scan on the hit path), else a peer's."""
        return self.local_cache is not None or bool(self.candidates("cache"))

    async def cache_get(self, lookup: cache_pb2.CacheLookup, controls: CacheControls | None = None
                        ) -> cache_pb2.GetResponse | None:
        """A live entry, or None (a miss, or no cache node reachable: the cache is best effort).

        ``controls`` add the maximum age and, with ``semantic``, a guarded semantic lookup
        after an exact miss (``reply.match`` says which).
        """
        controls = controls or CacheControls()
        local = self.local_cache
        if local is not None:
            try:
                reply = await local.lookup(
                    cache_key(lookup.prompt, lookup.model, lookup.params, lookup.namespace),
                    read_through=True, max_age_s=controls.max_age_s, namespace=lookup.namespace)
                if not reply.found and controls.semantic:
                    reply = await local.semantic_lookup(lookup, controls.min_similarity, controls.max_age_s)
            except Exception:  # a broken store is a miss, never a failed answer
                log.exception("local cache lookup failed")
                return None
            return reply if reply.found else None
        request = cache_pb2.GetRequest(lookup=lookup, read_through=True, semantic=controls.semantic,
                                       min_similarity=controls.min_similarity if controls.semantic else 0.0,
                                       max_age_ms=round(controls.max_age_s * 1000) if controls.max_age_s else 0)
        if controls.max_age_s == 0:
            return None  # nothing is young enough
        try:
            reply, _, _ = await self.policy.call(
                self.candidates("cache"),
                lambda c: self._stub(cache_pb2_grpc.CacheStub, c).Get(request, timeout=5), what="cache node")
        except PeerCallError:
            return None  # no cache node could answer: a miss
        return reply if reply.found else None

    async def cache_get_key(self, key: str, namespace: str, controls: CacheControls) -> CachedAnswer | None:
        """This node's own live entry for ``key`` (or a replica's, read through) as a ``CachedAnswer``,
        else None (a miss, a broken store, or no cache role here).

        The exact half of ``cache_get`` for the planner's hit path, which has the key already
        and reads the hit in-process without a reply message.
        """
        local = self.local_cache
        if local is None:
            return None
        try:
            return await local.lookup_answer(key, read_through=True, max_age_s=controls.max_age_s, namespace=namespace)
        except Exception:  # a broken store is a miss, never a failed answer
            log.exception("local cache lookup failed")
            return None

    async def cache_put(self, lookup: cache_pb2.CacheLookup, response: str, controls: CacheControls | None = None,
                        usage: common_pb2.CachedUsage | None = None) -> tuple[int, int] | None:
        """Store an answer on this node's cache, else on a cache peer; ``(copies, target)`` or None.

        Returns once W copies are verified (``--write-acks``) or the wait's bound passed;
        replication to the rest goes on in the background.
        """
        controls = controls or CacheControls()
        local = self.local_cache
        if local is not None:
            try:
                entry = await local.store(lookup, response, ttl_s=controls.ttl_s, semantic=controls.semantic,
                                          writer=controls.writer, usage=usage)
            except Exception as exc:  # too big, store down: the answer stands, uncached
                log.warning("not cached: %s", exc)
                return None
            copies, target, _ = await local.copies_of(entry)
            return copies, target
        request = cache_pb2.PutRequest(lookup=lookup, response=response, semantic=controls.semantic,
                                       writer=controls.writer, usage=usage,
                                       ttl_ms=max(1, round(controls.ttl_s * 1000)) if controls.ttl_s else 0)
        try:
            reply, _, _ = await self.policy.call(
                self.candidates("cache"),
                lambda c: self._stub(cache_pb2_grpc.CacheStub, c).Put(request, timeout=5), what="cache node")
        except PeerCallError:
            return None  # the answer stands, uncached
        return reply.copies, reply.copies_target

    # -- models -----------------------------------------------------------------------
    async def generate(
        self, model: str, messages: list[common_pb2.ChatMessage], params: common_pb2.GenerationParams,
        failed_over: list[Failover],
    ) -> AsyncIterator[tuple[Candidate, inference_pb2.GenerateResponse]]:
        """Stream a generation from the first llm node that accepts it.

        Fails over to the next node while nothing has been received yet, including when a
        node sends nothing for ``first_token_timeout_s`` (a backend that accepted and went
        silent, a Ray stream that never yields, a paused process): that node's call is
        cancelled, which stops its work. Once text has flowed, a broken or silent stream is
        the caller's error (the answer would be spliced). Every node left behind is
        appended to ``failed_over`` with why.
        """
        request = inference_pb2.GenerateRequest(model=model, messages=messages, params=params)
        candidates = self.candidates("llm", model)
        if not candidates:
            if model in self.model_memory:
                raise self.offline_error(model)
            known = ", ".join(self.models()) or "none"
            raise MeshCallError(grpc.StatusCode.UNAVAILABLE if known == "none" else grpc.StatusCode.NOT_FOUND,
                                f"no live llm node serves model {model!r} (models in the mesh: {known})")
        stream = self.policy.stream(
            candidates, lambda c: self._stub(inference_pb2_grpc.InferenceStub, c).Generate(request, timeout=600),
            spread=True, silence_s=self.first_token_timeout_s, first="token",
            silence_flag="--first-token-timeout", failed_over=failed_over, what="llm node")
        try:
            async with contextlib.aclosing(stream):  # a consumer that stops early cancels the node's work now
                async for cand, chunk in stream:
                    yield cand, chunk
        except PeerCallError as exc:
            if exc.silent:
                raise MeshCallError(exc.code, f"{exc.details}; ask again and another llm node will answer") from exc
            if exc.mid_stream:
                assert exc.candidate is not None
                raise MeshCallError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"llm node {exc.candidate.name} failed mid-answer ({exc.code.name}: {exc.details}); "
                    "ask again and another llm node will answer") from exc
            if exc.exhausted:
                raise MeshCallError(exc.code, f"every llm node serving {model!r} failed: {exc.tried()}") from exc
            raise MeshCallError(exc.code, exc.details) from exc


def result_text(tool: str, result: dict[str, Any]) -> str:
    """A tool result as the answer a person reads."""
    if tool == "calculator":
        for key in ("result", "value", "exact"):
            if key in result:
                return str(result[key])
    if tool == "web_search" and isinstance(result.get("results"), list):
        lines = []
        for i, hit in enumerate(result["results"][:5], start=1):
            title = hit.get("title") or hit.get("url") or hit.get("path") or "result"
            where = hit.get("url") or hit.get("path") or ""
            snippet = (hit.get("snippet") or hit.get("content") or "").strip()
            lines.append(f"{i}. {title}" + (f" — {where}" if where else "") + (f"\n   {snippet}" if snippet else ""))
        return "\n".join(lines) if lines else "no results"
    if tool == "browser" and "title" in result:
        text = str(result.get("text", ""))[:600]
        return f"{result.get('title', '')}\n{result.get('url', '')}\n\n{text}".strip()
    return json.dumps(result, ensure_ascii=False, sort_keys=True)
