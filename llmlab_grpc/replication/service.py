"""The ``Replica`` gRPC service: where other nodes store, fetch, locate, sync and drop copies.

Copies live in the node's ``CacheManager`` (the cache role's, or the replica role's own
when the node has no cache role), so they obey the same TTL, byte budget and entry cap
as everything else the node caches and show up as ``replica_entries`` in its statistics.
A malformed request is INVALID_ARGUMENT; a copy that fails its checks is not an error
but an answer (``accepted=false`` with the reason, or counted in ``rejected``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from llmlab_grpc.cache.keys import InvalidParams, cache_key, is_key
from llmlab_grpc.mesh.identity import certificate_names, impersonation
from llmlab_grpc.proto.llmlab.v1 import common_pb2, replica_pb2, replica_pb2_grpc
from llmlab_grpc.replication.replicator import SYNC_CALL_MAX_BYTES, SYNC_CALL_MAX_ENTRIES, Replicator

log = logging.getLogger(__name__)

MAX_DROP_KEYS = 10_000
"""Keys (and tombstones) one ``Drop`` request may name."""
MAX_TOMBSTONES = 16_384
"""Tombstones one ``Sync`` call takes; the sender's next round brings the rest."""
MAX_DIGEST_MEMBERS = 1024
"""Members one ``Digest`` request may list."""


class ReplicaService(replica_pb2_grpc.ReplicaServicer):
    """Serves one node's copies through its ``Replicator``."""

    def __init__(self, replicator: Replicator) -> None:
        self.replicator = replicator

    async def _check_sender(self, sender: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Abort unless ``sender`` is named and, under mTLS with per-node certificates, is the caller."""
        if not sender:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "sender_node_id is empty: name the sending node")
        known = [r.node_id for r in self.replicator.peers.all()] + [self.replicator.node_id]
        refused = impersonation(certificate_names(context), sender, known)
        if refused:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)

    def _ref(self, node_id: str) -> replica_pb2.NodeRef:
        name, address = self.replicator.name_of(node_id)
        return replica_pb2.NodeRef(node_id=node_id, name=name, address=address)

    async def Store(
        self, request: replica_pb2.StoreRequest,
        context: grpc.aio.ServicerContext[replica_pb2.StoreRequest, replica_pb2.StoreResponse],
    ) -> replica_pb2.StoreResponse:
        if not request.HasField("entry") or not request.entry.key:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "StoreRequest.entry is empty: send the whole entry")
        await self._check_sender(request.sender_node_id, context)
        accepted, reason = self.replicator.accept_copy(request.entry, request.sender_node_id,
                                                       hint_for=request.hint_for_node_id)
        return replica_pb2.StoreResponse(accepted=accepted, reason=reason)

    async def Fetch(
        self, request: replica_pb2.FetchRequest,
        context: grpc.aio.ServicerContext[replica_pb2.FetchRequest, replica_pb2.FetchResponse],
    ) -> replica_pb2.FetchResponse:
        if not is_key(request.key):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "key must be 64 lowercase hex digits (a sha256)")
        entry = self.replicator.manager.get_entry(request.key)
        if entry is None:
            return replica_pb2.FetchResponse(found=False)
        return replica_pb2.FetchResponse(found=True, entry=entry.to_proto())

    async def Locate(
        self, request: replica_pb2.LocateRequest,
        context: grpc.aio.ServicerContext[replica_pb2.LocateRequest, replica_pb2.LocateResponse],
    ) -> replica_pb2.LocateResponse:
        key = request.key
        if key:
            if not is_key(key):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "key must be 64 lowercase hex digits (a sha256)")
        else:
            if not request.model:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "name the entry: set key, or prompt and model (model is empty)")
            try:
                key = cache_key(request.prompt, request.model, request.params, request.namespace)
            except InvalidParams as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        found = await self.replicator.locate(key)
        reply = replica_pb2.LocateResponse(key=key)
        if found.primary:
            reply.primary.CopyFrom(self._ref(found.primary))
        reply.replicas.extend(self._ref(n) for n in found.replicas)
        reply.placement.extend(self._ref(n) for n in found.placement)
        return reply

    async def Sync(
        self, request_iterator: AsyncIterator[replica_pb2.SyncRequest],
        context: grpc.aio.ServicerContext[replica_pb2.SyncRequest, replica_pb2.SyncResponse],
    ) -> replica_pb2.SyncResponse:
        """Take up to ``SYNC_CALL_MAX_ENTRIES`` / ``SYNC_CALL_MAX_BYTES`` per call, then answer with
        ``last_key``: the sender resumes after it in a new call."""
        received: list[common_pb2.CacheEntry] = []
        stones: list[replica_pb2.Tombstone] = []
        sender = ""
        size = 0
        async for request in request_iterator:
            if not sender:
                sender = request.sender_node_id
                await self._check_sender(sender, context)
            elif request.sender_node_id not in ("", sender):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "one Sync call speaks for one sender_node_id")
            received.extend(request.entries)
            stones.extend(request.tombstones)
            size += request.ByteSize()
            if (len(received) >= SYNC_CALL_MAX_ENTRIES or len(stones) >= MAX_TOMBSTONES
                    or size >= SYNC_CALL_MAX_BYTES):
                break
        self.replicator.accept_tombstones(stones)  # first: a copy they bury is then refused
        stored, rejected = self.replicator.accept_batch(received, sender)
        return replica_pb2.SyncResponse(stored=stored, rejected=rejected,
                                        last_key=received[-1].key if received else "")

    async def Drop(
        self, request: replica_pb2.DropRequest,
        context: grpc.aio.ServicerContext[replica_pb2.DropRequest, replica_pb2.DropResponse],
    ) -> replica_pb2.DropResponse:
        if len(request.keys) > MAX_DROP_KEYS or len(request.tombstones) > MAX_DROP_KEYS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{len(request.keys)} keys in one Drop; the limit is {MAX_DROP_KEYS}")
        await self._check_sender(request.sender_node_id, context)
        return replica_pb2.DropResponse(dropped=self.replicator.drop_copies(request.keys, request.sender_node_id,
                                                                            request.tombstones))

    async def Digest(
        self, request: replica_pb2.DigestRequest,
        context: grpc.aio.ServicerContext[replica_pb2.DigestRequest, replica_pb2.DigestResponse],
    ) -> replica_pb2.DigestResponse:
        """Anti-entropy: compare the sender's bucket hashes with this node's (``anti_entropy.py``)."""
        if not request.sender_node_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "sender_node_id is empty")
        if len(request.members) > MAX_DIGEST_MEMBERS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{len(request.members)} members in one Digest; the limit is {MAX_DIGEST_MEMBERS}")
        try:
            return await self.replicator.anti_entropy.answer(request)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # unreachable: abort raises

    async def Search(
        self, request: replica_pb2.SearchRequest,
        context: grpc.aio.ServicerContext[replica_pb2.SearchRequest, replica_pb2.SearchResponse],
    ) -> replica_pb2.SearchResponse:
        """The semantic cache across the mesh: this node's best match for a peer's question
        (``cache/semantic/mesh_search.py``); found=false when it holds none or has no index."""
        from llmlab_grpc.cache.semantic.mesh_search import BadSearch, query_vector, search_held

        await self._check_sender(request.sender_node_id, context)
        if not 0 < request.min_similarity <= 1 or request.max_age_ms < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "min_similarity must be in (0, 1] and max_age_ms 0 (any age) or positive")
        manager = self.replicator.manager
        if manager.index is None:
            return replica_pb2.SearchResponse(found=False)
        try:
            vector = query_vector(request.vector, manager.index.dim)
            found = await search_held(manager, request.lookup, vector, request.min_similarity,
                                      request.max_age_ms / 1000 if request.max_age_ms else None)
        except (BadSearch, InvalidParams) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if found is None:
            return replica_pb2.SearchResponse(found=False)
        entry, similarity = found
        return replica_pb2.SearchResponse(found=True, entry=entry.to_proto(), similarity=similarity)
