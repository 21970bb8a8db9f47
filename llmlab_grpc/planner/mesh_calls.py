"""How the planner reaches the mesh: tools, cache and models, each on a node that has the role.

Every call goes to a node chosen from the peer table (this node first when it has the
role, then the least busy peers) over the node's authenticated channels, failing over
on UNAVAILABLE / DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED. Going through gRPC even to
this node keeps one code path, one set of status codes and one trace for local and
remote work alike; the one exception is this node's own cache, read and written
in-process, because a cache hit is the path whose latency matters most.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from llmlab_grpc.cache.keys import cache_key
from llmlab_grpc.planner.cache_controls import CacheControls
from llmlab_grpc.planner.spreading import LlmLoad, spread_order
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
    from llmlab_grpc.node import LlmlabNode

log = logging.getLogger(__name__)
FAILOVER_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
SUSPECT_FOR_S = 10.0
"""A node that just failed us is tried last for this long (heartbeats drop it if it is dead)."""


class MeshCallError(Exception):
    """A step could not be done; ``code`` is the gRPC status to report (None: the step's own failure)."""

    def __init__(self, code: grpc.StatusCode | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Candidate:
    """A node that can take a call."""

    node_id: str
    name: str
    address: str
    busy: int = 0
    speed: float = 0.0
    """Measured tokens/s (llm candidates), 0 when unknown."""


@dataclass
class MeshCalls:
    """Calls from the planner of ``node`` to the nodes that can serve them."""

    node: LlmlabNode
    suspects: dict[str, float] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    """node_id -> generations this planner has running there now (live, unlike heartbeats)."""

    # -- choosing nodes ---------------------------------------------------------------
    def candidates(self, role: str, model: str = "") -> list[Candidate]:
        """Nodes with ``role`` (and ``model``), best first; nodes that just failed us last.

        llm nodes are ordered by expected wait (``spreading.py``: queue and measured speed);
        other roles by load, this node first.
        """
        node = self.node
        found: list[Candidate] = []
        if role in node.settings.roles and (not model or model in node.models):
            local = max(node.load.generations_running, self.in_flight.get(node.node_id, 0)) if role == "llm" else -1
            found.append(Candidate(node.node_id, node.settings.name, node.address, local,
                                   node.load.tokens_per_second))
        for peer in node.peers.with_role(role):
            if peer.info.kind == common_pb2.NODE_KIND_MOBILE or (model and model not in peer.info.models):
                continue
            if role == "llm":
                busy = max(peer.load.generations_running, self.in_flight.get(peer.node_id, 0))
            else:
                busy = peer.load.in_flight
            found.append(Candidate(peer.node_id, peer.info.name, peer.address, busy, peer.load.tokens_per_second))
        if role == "llm":
            order = spread_order([LlmLoad(c.busy, c.speed, c.node_id == node.node_id) for c in found])
            found = [found[i] for i in order]
        now = time.monotonic()
        suspect = {c.node_id for c in found if now - self.suspects.get(c.node_id, -1e9) < SUSPECT_FOR_S}
        if role == "llm":
            return sorted(found, key=lambda c: c.node_id in suspect)  # stable: the spread order stays
        return sorted(found, key=lambda c: (c.node_id in suspect, c.busy))

    def _done_with(self, node_id: str) -> None:
        left = self.in_flight.get(node_id, 0) - 1
        if left > 0:
            self.in_flight[node_id] = left
        else:
            self.in_flight.pop(node_id, None)  # bounded: only nodes with work in flight are kept

    def suspect(self, node_id: str) -> None:
        self.suspects[node_id] = time.monotonic()

    def default_model(self) -> str:
        """This node's first model, else the first live llm peer's, else the last default seen.

        The last one keeps a cached answer askable when no llm node is alive: the model is
        part of the cache key.
        """
        if self.node.models:
            return self.node.models[0]
        for peer in self.node.peers.with_role("llm"):
            if peer.info.models:
                return peer.info.models[0]
        return self.node.known_models.default

    def models(self) -> list[str]:
        """Models served by a live node now."""
        names = list(self.node.models)
        for peer in self.node.peers.with_role("llm"):
            names.extend(m for m in peer.info.models if m not in names)
        return names

    def known_models(self) -> list[str]:
        """Models served now, then those served earlier in this mesh (offline now, maybe still cached)."""
        names = self.models()
        names.extend(m for m in self.node.known_models.names() if m not in names)
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
    async def execute_tool(self, tool: str, arguments: dict[str, Any], task_id: str
                           ) -> tool_executor_pb2.ExecuteResponse:
        """Run a tool on a tools node (whose router may forward it to the node that has it)."""
        request = tool_executor_pb2.ExecuteRequest(tool=tool, arguments=to_struct(arguments), task_id=task_id)
        failed: list[str] = []
        last: grpc.aio.AioRpcError | None = None
        for cand in self.candidates("tools"):
            stub = tool_executor_pb2_grpc.ToolExecutorStub(self.node.channels.get(cand.address))
            try:
                reply = await stub.Execute(request, timeout=120)
            except grpc.aio.AioRpcError as err:
                if err.code() in FAILOVER_CODES:
                    failed.append(cand.node_id)
                    self.suspect(cand.node_id)
                    last = err
                    continue
                raise MeshCallError(err.code(), err.details() or str(err.code())) from err
            reply.failed_over[:0] = failed
            return reply
        if last is not None:
            raise MeshCallError(last.code(), f"no tools node could run {tool}: {last.details()}")
        raise MeshCallError(grpc.StatusCode.UNAVAILABLE, f"no node with the tools role is alive to run {tool}")

    async def tool_catalogue(self) -> dict[str, dict[str, Any]]:
        """name → {description, input_schema} of every tool in the mesh."""
        for cand in self.candidates("tools"):
            stub = tool_executor_pb2_grpc.ToolExecutorStub(self.node.channels.get(cand.address))
            try:
                reply = await stub.ListTools(tool_executor_pb2.ListToolsRequest(), timeout=10)
            except grpc.aio.AioRpcError:
                continue
            return {
                t.name: {"description": t.description,
                         "input_schema": from_struct(t.input_schema)}
                for t in reply.tools
            }
        return {}

    # -- cache ------------------------------------------------------------------------
    def _local_cache(self) -> Any:
        """This node's cache component, when it has the role (hits then cost no RPC)."""
        return self.node.components.get("cache")

    def has_cache(self) -> bool:
        """Whether some cache can be asked: this node's own (no peer scan on the hit path), else a peer's."""
        return self._local_cache() is not None or bool(self.candidates("cache"))

    async def cache_get(self, lookup: cache_pb2.CacheLookup, controls: CacheControls | None = None
                        ) -> cache_pb2.GetResponse | None:
        """A live entry, or None (a miss, or no cache node reachable: the cache is best effort).

        ``controls`` add the maximum age and, with ``semantic``, a guarded semantic lookup
        after an exact miss (``reply.match`` says which).
        """
        controls = controls or CacheControls()
        local = self._local_cache()
        if local is not None:
            try:
                reply = await local.service.lookup(
                    cache_key(lookup.prompt, lookup.model, lookup.params, lookup.namespace),
                    read_through=True, max_age_s=controls.max_age_s, namespace=lookup.namespace)
                if not reply.found and controls.semantic:
                    reply = await local.service.semantic_lookup(lookup, controls.min_similarity, controls.max_age_s)
            except Exception:  # a broken store is a miss, never a failed answer
                log.exception("local cache lookup failed")
                return None
            return reply if reply.found else None
        request = cache_pb2.GetRequest(lookup=lookup, read_through=True, semantic=controls.semantic,
                                       min_similarity=controls.min_similarity if controls.semantic else 0.0,
                                       max_age_ms=round(controls.max_age_s * 1000) if controls.max_age_s else 0)
        if controls.max_age_s == 0:
            return None  # nothing is young enough
        for cand in self.candidates("cache"):
            stub = cache_pb2_grpc.CacheStub(self.node.channels.get(cand.address))
            try:
                reply = await stub.Get(request, timeout=5)
            except grpc.aio.AioRpcError as err:
                if err.code() in FAILOVER_CODES:
                    continue
                return None
            return reply if reply.found else None
        return None

    async def cache_put(self, lookup: cache_pb2.CacheLookup, response: str, controls: CacheControls | None = None,
                        usage: common_pb2.CachedUsage | None = None) -> tuple[int, int] | None:
        """Store an answer on this node's cache, else on a cache peer; ``(copies, target)`` or None.

        Returns once W copies are verified (``--write-acks``) or the wait's bound passed;
        replication to the rest goes on in the background.
        """
        controls = controls or CacheControls()
        local = self._local_cache()
        if local is not None:
            try:
                entry = await local.service.store(lookup, response, ttl_s=controls.ttl_s, semantic=controls.semantic,
                                                  writer=controls.writer, usage=usage)
            except Exception as exc:  # too big, store down: the answer stands, uncached
                log.warning("not cached: %s", exc)
                return None
            copies, target, _ = await local.service.copies_of(entry)
            return copies, target
        request = cache_pb2.PutRequest(lookup=lookup, response=response, semantic=controls.semantic,
                                       writer=controls.writer, usage=usage,
                                       ttl_ms=max(1, round(controls.ttl_s * 1000)) if controls.ttl_s else 0)
        for cand in self.candidates("cache"):
            stub = cache_pb2_grpc.CacheStub(self.node.channels.get(cand.address))
            try:
                reply = await stub.Put(request, timeout=5)
            except grpc.aio.AioRpcError as err:
                if err.code() in FAILOVER_CODES:
                    continue
                return None
            return reply.copies, reply.copies_target
        return None

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
            if model in self.node.known_models:
                raise self.offline_error(model)
            known = ", ".join(self.models()) or "none"
            raise MeshCallError(grpc.StatusCode.UNAVAILABLE if known == "none" else grpc.StatusCode.NOT_FOUND,
                                f"no live llm node serves model {model!r} (models in the mesh: {known})")
        silence_s = self.node.settings.first_token_timeout_s
        last: Failover | None = None
        for cand in candidates:
            stub = inference_pb2_grpc.InferenceStub(self.node.channels.get(cand.address))
            call = stub.Generate(request, timeout=600)
            received = False
            self.in_flight[cand.node_id] = self.in_flight.get(cand.node_id, 0) + 1
            try:
                while (chunk := await _next_piece(call, silence_s)) is not None:
                    received = True
                    yield cand, chunk
                return
            except TimeoutError as err:
                self.suspect(cand.node_id)
                if received:
                    raise MeshCallError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"llm node {cand.name} went silent mid-answer (nothing for {silence_s:g} s, "
                        "--first-token-timeout); ask again and another llm node will answer") from err
                last = Failover(cand.node_id, cand.name, grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"sent no first token within {silence_s:g} s (--first-token-timeout)")
                failed_over.append(last)
                log.warning("llm node %s %s: trying the next one", cand.name, last.why)
            except grpc.aio.AioRpcError as err:
                if not received and err.code() in FAILOVER_CODES:
                    self.suspect(cand.node_id)
                    last = Failover(cand.node_id, cand.name, err.code(),
                                    f"{err.code().name}: {(err.details() or '')[:MAX_WHY_CHARS]}")
                    failed_over.append(last)
                    continue
                if received:
                    self.suspect(cand.node_id)
                    raise MeshCallError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"llm node {cand.name} failed mid-answer ({err.code().name}: {err.details()}); "
                        "ask again and another llm node will answer",
                    ) from err
                raise MeshCallError(err.code(), err.details() or str(err.code())) from err
            finally:
                call.cancel()
                self._done_with(cand.node_id)
        assert last is not None
        tried = "; ".join(f.describe() for f in failed_over)
        raise MeshCallError(last.code, f"every llm node serving {model!r} failed: {tried}")


MAX_WHY_CHARS = 200
"""Characters of a node's error message kept in a failover note (the step's reason)."""


@dataclass
class Failover:
    """An llm node the planner left for the next one, and why (shown in the step's trace)."""

    node_id: str
    name: str
    code: grpc.StatusCode
    why: str

    def describe(self) -> str:
        return f"llm node {self.name} {self.why}" if self.code == grpc.StatusCode.DEADLINE_EXCEEDED \
            else f"llm node {self.name}: {self.why}"


async def _next_piece(call: Any, silence_s: float) -> inference_pb2.GenerateResponse | None:
    """The stream's next message, None at its end; ``TimeoutError`` after ``silence_s`` without one."""
    message = await asyncio.wait_for(call.read(), silence_s)
    return None if message is grpc.aio.EOF else message


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
