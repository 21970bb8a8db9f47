"""The ``Cache`` gRPC service: a node's ``CacheManager`` for other nodes and clients.

Validation happens here, at the edge, with the status a client can act on: a request
naming no entry, an empty model, a malformed key, a bad TTL or an oversize value is
INVALID_ARGUMENT (the oversize message names the limit); a store that fails is
UNAVAILABLE. Nothing a client sends can raise out of a handler.

Read-through: ``Get`` with ``read_through`` (the planner's lookups set it) asks the
cache's peer source on a local miss (``hooks.PeerSource.read_through``, attached to the
manager by the replica role when the node has it), which returns a verified copy from a
replica and its node id; a copy older than the request's ``max_age_ms`` is still a miss.
The copy is answered, not stored here: placement decides which nodes hold it. On a node
without a peer source the flag is accepted and the answer is this node's own. ``Put``
returns once W copies are verified (``--write-acks``, ``PeerSource.confirm_copies``) or
its deadline passes: a put short of W is an answer (``copies < write_acks``), not an
error, because the entry is stored and readable here and replication goes on; an error
would invite a retry that changes nothing. A ``Delete`` of a key not held here still
reaches the peer source (``bury``), so the mesh forgets it too.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from llmlab_grpc.cache.entry import CachedAnswer, CacheEntry
from llmlab_grpc.cache.errors import InvalidCacheRequest, InvalidParams, StoreUnavailable
from llmlab_grpc.cache.keys import cache_key, is_key
from llmlab_grpc.cache.manager import CacheManager, EntryExtras
from llmlab_grpc.cache.wire import hit_reply, reply_head
from llmlab_grpc.mesh.bytes_methods import BytesMethods
from llmlab_grpc.proto.llmlab.v1 import cache_pb2, cache_pb2_grpc, common_pb2

if TYPE_CHECKING:  # numpy and the embedder load only where the semantic cache is on
    from llmlab_grpc.cache.semantic import SemanticCache

log = logging.getLogger(__name__)

WRITE_ACK_TIMEOUT_S = 3.0
"""Longest a put waits for its W copies when the caller's deadline is longer (or unset)."""


def _key_of(key: str, lookup: cache_pb2.CacheLookup, has_lookup: bool) -> str:
    """The key a request names, by key or by lookup; InvalidCacheRequest when it names none."""
    if key:
        if not is_key(key):
            raise InvalidCacheRequest("key must be 64 lowercase hex digits (a sha256), e.g. from `llmlab cache put`")
        return key
    if not has_lookup:
        raise InvalidCacheRequest("name the entry: set key, or lookup with prompt and model")
    if not lookup.model:
        raise InvalidCacheRequest("lookup.model is empty: name the model the response is for")
    return cache_key(lookup.prompt, lookup.model, lookup.params, lookup.namespace)


REQUEST_MEMO_ENTRIES = 1024
"""``Get`` requests remembered as their plan (below), by their bytes: at most this many ..."""
REQUEST_MEMO_MAX_BYTES = 1024
"""... of at most this many bytes each (about 1 MiB in all); a longer request is planned every time."""


@dataclass(frozen=True)
class GetPlan:
    """What a valid ``GetRequest`` asks for, once it is parsed, checked and its key derived."""

    key: str
    namespace: str
    read_through: bool
    max_age_s: float | None
    semantic: bool


def plan_get(raw: bytes) -> GetPlan:
    """The plan of a serialized ``GetRequest``; InvalidCacheRequest or InvalidParams when it is unusable.

    A request is a pure function of its bytes, so the plans of short ones are remembered
    (``REQUEST_MEMO_ENTRIES``): a client asking the same question again, the common case
    of a cache, skips parsing and hashing (~20k instructions a call).
    """
    return _remembered_plan(raw) if len(raw) <= REQUEST_MEMO_MAX_BYTES else _plan(raw)


def _plan(raw: bytes) -> GetPlan:
    try:
        request = cache_pb2.GetRequest.FromString(raw)
    except DecodeError as exc:
        raise InvalidCacheRequest(f"the request is not a GetRequest ({exc})") from exc
    has_lookup = request.HasField("lookup")
    key = _key_of(request.key, request.lookup, has_lookup)
    if request.max_age_ms < 0:
        raise InvalidCacheRequest(f"max_age_ms must be 0 (any age) or positive, not {request.max_age_ms}")
    return GetPlan(key=key, namespace=request.lookup.namespace if has_lookup else "",
                   read_through=request.read_through,
                   max_age_s=request.max_age_ms / 1000 if request.max_age_ms else None, semantic=request.semantic)


_remembered_plan = functools.lru_cache(maxsize=REQUEST_MEMO_ENTRIES)(_plan)  # an invalid one raises: not kept


async def _named_key(request: cache_pb2.GetRequest | cache_pb2.DeleteRequest,
                     context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The key a ``Get`` or ``Delete`` names (``_key_of``); aborts with INVALID_ARGUMENT and why otherwise."""
    try:
        return _key_of(request.key, request.lookup, request.HasField("lookup"))
    except (InvalidCacheRequest, InvalidParams) as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))


class CacheService(cache_pb2_grpc.CacheServicer):
    """Serves one node's cache."""

    def __init__(self, manager: CacheManager, node_id: str) -> None:
        self.manager = manager
        self.node_id = node_id
        self._hit_head = reply_head(
            cache_pb2.GetResponse(found=True, source_node_id=node_id, match="exact").SerializeToString())
        """A hit's ``GetResponse`` but its entry, serialized (``get_wire``)."""
        self.semantic: SemanticCache | None = None
        """The node's ``SemanticCache`` (embedder + index + guard), when it has one."""

    async def copies_of(self, entry: CacheEntry, timeout_s: float = WRITE_ACK_TIMEOUT_S) -> tuple[int, int, int]:
        """After a local put: ``(copies, target, W)`` once W copies are verified or ``timeout_s`` passed.

        Without a peer source (no replica role, or N=0) the one local copy is all there is.
        """
        source = self.manager.peer_source
        if source is None:
            return 1, 1, 1
        return await source.confirm_copies(entry, max(0.0, min(timeout_s, WRITE_ACK_TIMEOUT_S)))

    async def Get(
        self, request: cache_pb2.GetRequest,
        context: grpc.aio.ServicerContext[cache_pb2.GetRequest, cache_pb2.GetResponse],
    ) -> cache_pb2.GetResponse:
        key = await _named_key(request, context)
        if request.max_age_ms < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"max_age_ms must be 0 (any age) or positive, not {request.max_age_ms}")
        max_age_s = request.max_age_ms / 1000 if request.max_age_ms else None
        reply = await self.lookup(key, read_through=request.read_through, max_age_s=max_age_s,
                                  namespace=request.lookup.namespace if request.HasField("lookup") else "")
        if request.semantic and (not reply.found or request.candidates > 0):
            if not request.HasField("lookup") or not request.lookup.model:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "a semantic lookup needs lookup with prompt and model (not a key)")
            if not 0 <= request.min_similarity <= 1 or request.candidates < 0:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "min_similarity must be in [0, 1] and candidates 0 or more")
            semantic = await self.semantic_lookup(request.lookup, request.min_similarity, max_age_s,
                                                  min(request.candidates, 50))
            if reply.found:
                reply.candidates.extend(semantic.candidates)
            else:
                reply = semantic
        return reply

    async def get_wire(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        """``Get`` as the node serves it: the request and the reply as bytes.

        A hit of a plain request (no ``semantic``) is written as bytes from parts serialized
        once (``plan_get``, ``CacheManager.aget_wire``, ``wire.hit_reply``): the same message
        ``Get`` answers, for about a third of the Python work. Everything else goes the
        message way.
        """
        try:
            plan = plan_get(raw)
        except (InvalidCacheRequest, InvalidParams) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if plan.semantic:
            reply = await self.Get(cache_pb2.GetRequest.FromString(raw), context)
            return reply.SerializeToString()
        hit = await self.manager.aget_wire(plan.key, max_age_s=plan.max_age_s, namespace=plan.namespace)
        if hit is not None:
            return hit_reply(self._hit_head, *hit)
        missed = await self._read_through(plan.key, plan.read_through, plan.max_age_s)
        return missed.SerializeToString()

    async def lookup(self, key: str, read_through: bool = False, max_age_s: float | None = None,
                     namespace: str = "") -> cache_pb2.GetResponse:
        """This node's live entry for ``key``, else (with ``read_through``) a verified replica's.

        The planner of this node calls it in-process for its cache hits, skipping the
        loopback gRPC hop; ``Get`` is the same lookup for everyone else. ``max_age_s``
        refuses entries created longer ago than that (a replica's copy too).
        """
        reply = cache_pb2.GetResponse(found=True, source_node_id=self.node_id, match="exact")
        if await self.manager.aget_into(key, reply.entry, max_age_s=max_age_s, namespace=namespace):
            return reply
        return await self._read_through(key, read_through, max_age_s)

    async def _read_through(self, key: str, read_through: bool, max_age_s: float | None) -> cache_pb2.GetResponse:
        """After a local miss: a verified replica's copy with ``read_through``, else not found."""
        found = await self._fresh_replica(key, read_through, max_age_s)
        if found is not None:
            remote, holder = found
            return cache_pb2.GetResponse(found=True, entry=remote.to_proto(), source_node_id=holder, match="exact")
        return cache_pb2.GetResponse(found=False)

    async def _fresh_replica(self, key: str, read_through: bool,
                             max_age_s: float | None) -> tuple[CacheEntry, str] | None:
        """With ``read_through``, a verified replica's copy of ``key`` and its holder, if young enough."""
        source = self.manager.peer_source
        if not read_through or source is None:
            return None
        found = await source.read_through(key)
        if found is None:
            return None
        remote, _ = found
        if max_age_s is not None and self.manager.now_ms() - remote.created_unix_ms > max_age_s * 1000:
            return None
        return found

    async def lookup_answer(self, key: str, read_through: bool = False, max_age_s: float | None = None,
                            namespace: str = "") -> CachedAnswer | None:
        """``lookup`` for this node's planner: the hit as a ``CachedAnswer`` (no reply message is
        built for it), None on a miss; the same entries, ages, read-through and counts."""
        found = await self.manager.aget_answer(key, max_age_s=max_age_s, namespace=namespace, node_id=self.node_id)
        if found is not None:
            return found
        remote_found = await self._fresh_replica(key, read_through, max_age_s)
        return CachedAnswer.of(*remote_found) if remote_found is not None else None

    async def Put(
        self, request: cache_pb2.PutRequest,
        context: grpc.aio.ServicerContext[cache_pb2.PutRequest, cache_pb2.PutResponse],
    ) -> cache_pb2.PutResponse:
        lookup = request.lookup
        try:
            if not request.HasField("lookup") or not lookup.model:
                raise InvalidCacheRequest("lookup.model is empty: name the model the response is for")
            if request.ttl_ms < 0:
                raise InvalidCacheRequest(f"ttl_ms must be positive (0 means the node's default), not {request.ttl_ms}")
            entry = await self.store(lookup, request.response, ttl_s=request.ttl_ms / 1000 if request.ttl_ms else None,
                                     critical=request.critical, semantic=request.semantic, writer=request.writer,
                                     usage=request.usage)
        except (InvalidCacheRequest, InvalidParams) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        # Leave a little of the caller's deadline for the answer itself.
        remaining = context.time_remaining()
        budget = WRITE_ACK_TIMEOUT_S if remaining is None else remaining * 0.8 - 0.05
        copies, target, acks = await self.copies_of(entry, budget)
        return cache_pb2.PutResponse(key=entry.key, entry=entry.to_proto(), copies=copies, copies_target=target,
                                     write_acks=acks)

    async def store(self, lookup: cache_pb2.CacheLookup, response: str, *, ttl_s: float | None = None,
                    critical: bool = False, semantic: bool = False, writer: str = "",
                    usage: common_pb2.CachedUsage | None = None) -> CacheEntry:
        """Store ``response`` for ``lookup``: ``Put``, and the planner of this node in-process.

        With ``semantic`` (and a semantic index on this node) the entry's question is
        embedded first, off the event loop, so the vector is stored and replicated with it.
        """
        usage = usage or common_pb2.CachedUsage()
        semantic_text = lookup.semantic_text or lookup.prompt
        embedding = b""
        if semantic and self.semantic is not None:
            embedding = await self.semantic.embed(semantic_text)
        extras = EntryExtras(namespace=lookup.namespace, writer=writer, prompt_tokens=usage.prompt_tokens,
                             completion_tokens=usage.completion_tokens, finish_reason=usage.finish_reason,
                             semantic_text=semantic_text if embedding else lookup.semantic_text,
                             context_hash=lookup.context_hash, embedding=embedding)
        return self.manager.put(lookup.prompt, lookup.model, response, lookup.params, ttl=ttl_s, critical=critical,
                                extras=extras)

    async def semantic_lookup(self, lookup: cache_pb2.CacheLookup, min_similarity: float = 0.0,
                              max_age_s: float | None = None, candidates: int = 0) -> cache_pb2.GetResponse:
        """The best guarded semantic match for ``lookup`` in this node's index (see ``cache/semantic``)."""
        if self.semantic is None:
            return cache_pb2.GetResponse(found=False)
        return await self.semantic.lookup(lookup, min_similarity=min_similarity, max_age_s=max_age_s,
                                          candidates=candidates)

    async def Delete(
        self, request: cache_pb2.DeleteRequest,
        context: grpc.aio.ServicerContext[cache_pb2.DeleteRequest, cache_pb2.DeleteResponse],
    ) -> cache_pb2.DeleteResponse:
        key = await _named_key(request, context)
        deleted = self.manager.delete(key)
        source = self.manager.peer_source
        if not deleted and source is not None:
            source.bury(key)  # not here, maybe elsewhere: the delete still holds for every copy
        return cache_pb2.DeleteResponse(deleted=deleted)

    async def Stats(
        self, request: cache_pb2.StatsRequest,
        context: grpc.aio.ServicerContext[cache_pb2.StatsRequest, cache_pb2.StatsResponse],
    ) -> cache_pb2.StatsResponse:
        return cache_pb2.StatsResponse(stats=self.manager.stats_proto())

    async def Clear(
        self, request: cache_pb2.ClearRequest,
        context: grpc.aio.ServicerContext[cache_pb2.ClearRequest, cache_pb2.ClearResponse],
    ) -> cache_pb2.ClearResponse:
        return cache_pb2.ClearResponse(removed=self.manager.clear())


def add_to_server(servicer: CacheService, server: Any) -> None:
    """``add_CacheServicer_to_server``, with ``Get`` served by ``get_wire`` (bytes in, bytes out).

    The generated code stays the one list of the service's methods; only ``Get``'s handler
    is swapped as it is registered.
    """
    add: Callable[[Any, Any], None] = cache_pb2_grpc.add_CacheServicer_to_server  # takes any registrar
    add(servicer, BytesMethods(server, {"Get": servicer.get_wire}))

