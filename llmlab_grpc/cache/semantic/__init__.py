"""The semantic cache: a cached answer for a question that means the same, never for one that does not.

``SemanticCache`` ties the bundled embedder (``embedder``), the node's index
(``index``) and the precision guard (``guard``) to one node's ``CacheManager``: a put
with ``semantic`` stores the question's vector with the entry (and so with its replicas),
and a lookup embeds the question, scans the vectors of its scope, and returns the most
similar entry at or above the threshold that the guard accepts; when this node holds none,
the peers are asked with the question's vector (``mesh_search``).
"""

from __future__ import annotations

import numpy as np

from llmlab_grpc.cache.entry import CacheEntry
from llmlab_grpc.cache.hooks import PeerSource
from llmlab_grpc.cache.manager import CacheManager
from llmlab_grpc.cache.semantic.embedder import MAX_SEMANTIC_CHARS, Embedder
from llmlab_grpc.cache.semantic.guard import refuse
from llmlab_grpc.cache.semantic.index import Neighbour, SemanticIndex, lookup_scope, signature
from llmlab_grpc.cache.semantic.mesh_search import judge
from llmlab_grpc.proto.llmlab.v1 import cache_pb2, replica_pb2

__all__ = ["MAX_SEMANTIC_CHARS", "Embedder", "SemanticCache", "SemanticIndex", "refuse"]

NEIGHBOURS = 8
"""Nearest entries the guard examines per lookup (the best refused ones may hide an acceptable one)."""


class SemanticCache:
    """Semantic stores and lookups for one node's cache."""

    def __init__(self, manager: CacheManager, node_id: str, default_min_similarity: float = 0.9,
                 embedder: Embedder | None = None, threads: int = 0) -> None:
        self.manager = manager
        self.node_id = node_id
        self.default_min_similarity = default_min_similarity
        self.embedder = embedder or Embedder(threads)
        self.index = SemanticIndex(self.embedder.dim)
        manager.index = self.index
        self.lookups = 0
        self.hits = 0
        self.refused = 0
        self.peer_searches = 0
        """Lookups that found no match here and asked the peers (``Replica.Search``)."""
        self.peer_hits = 0
        """Of ``hits``, those a peer's entry answered."""

    async def embed(self, text: str) -> bytes:
        """The stored form (float32 bytes) of ``text``'s vector; empty for a text too long to match."""
        if not text.strip() or len(text) > MAX_SEMANTIC_CHARS:
            return b""
        return (await self.embedder.embed(text)).astype(np.float32).tobytes()

    async def lookup(self, lookup: cache_pb2.CacheLookup, min_similarity: float = 0.0,
                     max_age_s: float | None = None, candidates: int = 0) -> cache_pb2.GetResponse:
        """The best guarded match for ``lookup`` (``match="semantic"``), and up to ``candidates`` neighbours."""
        text = lookup.semantic_text or lookup.prompt
        reply = cache_pb2.GetResponse(found=False)
        if not text.strip() or len(text) > MAX_SEMANTIC_CHARS:
            return reply
        threshold = min_similarity or self.default_min_similarity
        scope = lookup_scope(lookup.namespace, lookup.model, lookup.params, lookup.context_hash)
        # Only entries the guard could accept are scanned; with none here and no peer to ask,
        # nothing could match: no embedding spent. Listing candidates scans the whole scope
        # here, refused ones included (peers are not asked for lists).
        sig = None if candidates else signature(text)
        here = bool(len(self.index)) and self.index.has_scope(scope, sig)
        source = self.manager.peer_source if not candidates else None
        if source is not None and not source.semantic_peers():
            source = None
        if not here and source is None:
            return reply
        self.lookups += 1
        k, floor = max(NEIGHBOURS, candidates), 0.0 if candidates else threshold
        vector, neighbours = await self.embedder.embed_then(
            text, lambda v: (v, self._search(scope, v, k, floor, sig, here)))
        for near in neighbours:
            verdict = "" if near.similarity >= threshold else f"similarity below {threshold:.3f}"
            verdict = verdict or refuse(text, near.semantic_text)
            accepted = False
            if not verdict and not reply.found:
                # The lookup that counts the hit, written straight into the reply (no entry object
                # built and copied); off the loop for a store whose reads wait (Ray).
                accepted = await self.manager.aget_into(near.key, reply.entry, max_age_s=max_age_s)
                if not accepted:
                    verdict = "entry gone or older than the max age"
            if verdict and near.similarity >= threshold:
                self.refused += 1
            if len(reply.candidates) < candidates:
                reply.candidates.append(cache_pb2.SemanticCandidate(
                    key=near.key, semantic_text=near.semantic_text, similarity=near.similarity,
                    accepted=accepted, refused_because=verdict))
            if accepted:
                self.hits += 1
                reply.found = True
                reply.source_node_id = self.node_id
                reply.match = "semantic"
                reply.similarity = near.similarity
                if not candidates:
                    break
        if not reply.found and source is not None:
            await self._from_peers(source, lookup, vector, threshold, max_age_s, reply)
        return reply

    def _search(self, scope: str, vector: np.ndarray, k: int, floor: float, sig: int | None,
                here: bool) -> list[Neighbour]:
        """The index search of a lookup, on the worker thread right after the embedding, through
        the engine build's int8 scan (which peers' searches of this index then use too)."""
        self.index.scan = self.embedder.scan
        return self.index.search(scope, vector, k, floor, signature=sig) if here else []

    async def _from_peers(self, source: PeerSource, lookup: cache_pb2.CacheLookup, vector: np.ndarray,
                          threshold: float, max_age_s: float | None, reply: cache_pb2.GetResponse) -> None:
        """After a miss here: the first entry a peer holds that this node judges a match (``mesh_search``)."""
        question = cache_pb2.CacheLookup(  # what a match is judged on; not the whole prompt of a long conversation
            semantic_text=lookup.semantic_text or lookup.prompt, model=lookup.model, params=lookup.params,
            namespace=lookup.namespace, context_hash=lookup.context_hash)
        request = replica_pb2.SearchRequest(
            lookup=question, vector=np.asarray(vector, dtype="<f4").tobytes(), min_similarity=threshold,
            max_age_ms=max(1, round(max_age_s * 1000)) if max_age_s is not None else 0)  # 0 ms would mean any age
        now = self.manager.now_ms()
        self.peer_searches += 1
        found: tuple[float, CacheEntry, str] | None = None
        search = source.semantic_search(request)
        try:
            async for entry, node_id in search:  # the first match this node accepts: no wait for slower peers
                similarity = judge(lookup, vector, entry, threshold, max_age_s, now)
                if similarity is not None:
                    found = similarity, entry, node_id
                    break
        finally:
            await search.aclose()
        if found is None:
            return
        similarity, entry, node_id = found
        self.hits += 1
        self.peer_hits += 1
        reply.found = True
        reply.entry.CopyFrom(entry.to_proto())
        reply.source_node_id = node_id
        reply.match = "semantic"
        reply.similarity = similarity

    def stats(self) -> dict[str, int]:
        """The semantic cache's counters and the index's size (``llmlab_semantic_*`` metrics)."""
        return {"lookups": self.lookups, "hits": self.hits, "peer_hits": self.peer_hits, "refused": self.refused,
                "peer_searches": self.peer_searches, "index_entries": len(self.index)}

    def close(self) -> None:
        self.embedder.close()

