"""The ``Cache`` gRPC service: a node's ``CacheManager`` for other nodes and clients.

Validation happens here, at the edge, with the status a client can act on: a request
naming no entry, an empty model, a malformed key, a bad TTL or an oversize value is
INVALID_ARGUMENT (the oversize message names the limit); a store that fails is
UNAVAILABLE. Nothing a client sends can raise out of a handler.

``Get`` with ``read_through`` also asks replicas on a local miss once a replicator has
installed ``read_through`` (issue 6); until then the flag is accepted and ignored, so
clients can set it now.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc

from llmlab_grpc.cache.entry import CacheEntry
from llmlab_grpc.cache.errors import InvalidCacheRequest, InvalidParams, StoreUnavailable
from llmlab_grpc.cache.keys import cache_key, is_key
from llmlab_grpc.cache.manager import CacheManager
from llmlab_grpc.proto.llmlab.v1 import cache_pb2, cache_pb2_grpc

log = logging.getLogger(__name__)

ReadThrough = Callable[[str], Awaitable[tuple[CacheEntry, str] | None]]
"""``key -> (entry, source_node_id)`` from a replica, or ``None``."""


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
    return cache_key(lookup.prompt, lookup.model, lookup.params)


class CacheService(cache_pb2_grpc.CacheServicer):
    """Serves one node's cache."""

    def __init__(self, manager: CacheManager, node_id: str) -> None:
        self.manager = manager
        self.node_id = node_id
        self.read_through: ReadThrough | None = None

    async def Get(self, request: cache_pb2.GetRequest, context: grpc.aio.ServicerContext) -> cache_pb2.GetResponse:
        try:
            key = _key_of(request.key, request.lookup, request.HasField("lookup"))
        except (InvalidCacheRequest, InvalidParams) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return await self.lookup(key, read_through=request.read_through)

    async def lookup(self, key: str, read_through: bool = False) -> cache_pb2.GetResponse:
        """This node's live entry for ``key``, else (with ``read_through``) a verified replica's.

        The planner of this node calls it in-process for its cache hits, skipping the
        loopback gRPC hop; ``Get`` is the same lookup for everyone else.
        """
        entry = self.manager.get_by_key(key)
        if entry is not None:
            return cache_pb2.GetResponse(found=True, entry=entry.to_proto(), source_node_id=self.node_id)
        if read_through and self.read_through is not None:
            found = await self.read_through(key)
            if found is not None:
                remote, source = found
                return cache_pb2.GetResponse(found=True, entry=remote.to_proto(), source_node_id=source)
        return cache_pb2.GetResponse(found=False)

    async def Put(self, request: cache_pb2.PutRequest, context: grpc.aio.ServicerContext) -> cache_pb2.PutResponse:
        lookup = request.lookup
        try:
            if not request.HasField("lookup") or not lookup.model:
                raise InvalidCacheRequest("lookup.model is empty: name the model the response is for")
            if request.ttl_ms < 0:
                raise InvalidCacheRequest(f"ttl_ms must be positive (0 means the node's default), not {request.ttl_ms}")
            entry = self.manager.put(
                lookup.prompt, lookup.model, request.response, lookup.params,
                ttl=request.ttl_ms / 1000 if request.ttl_ms else None, critical=request.critical,
            )
        except (InvalidCacheRequest, InvalidParams) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return cache_pb2.PutResponse(key=entry.key, entry=entry.to_proto())

    async def Delete(
        self, request: cache_pb2.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.DeleteResponse:
        try:
            key = _key_of(request.key, request.lookup, request.HasField("lookup"))
        except (InvalidCacheRequest, InvalidParams) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return cache_pb2.DeleteResponse(deleted=self.manager.delete(key))

    async def Stats(
        self, request: cache_pb2.StatsRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.StatsResponse:
        return cache_pb2.StatsResponse(stats=self.manager.stats_proto())

    async def Clear(
        self, request: cache_pb2.ClearRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.ClearResponse:
        return cache_pb2.ClearResponse(removed=self.manager.clear())
