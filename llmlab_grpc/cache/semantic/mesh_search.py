"""The semantic cache across the mesh: ask the other cache nodes for an entry that means the same.

A node's index holds the entries it is primary for and the replicas placed on it, so an
answer stored on another node is not in it. A meaning has no key that names where its
copies are, so the asking node sends its question's *vector* to every live replica peer
(``Replica.Search``): each only scans its own index and runs the guard, no embedding, and
answers with its best entry. Nothing a peer says is trusted: the asker verifies the copy
(key and checksum, ``verify_copy``) and then judges it as if it were its own (``judge``):
the same scope, the similarity recomputed from the entry's own stored vector, the guard,
the maximum age. A forged or stale reply is a miss, never a wrong answer.

Two halves, one per side: ``search_held`` answers a ``Search`` from what this node holds;
``judge`` decides on the asker whether a returned entry answers its question.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import numpy as np

from llmlab_grpc.cache.semantic.embedder import MAX_SEMANTIC_CHARS
from llmlab_grpc.cache.semantic.guard import refuse
from llmlab_grpc.cache.semantic.index import lookup_scope, scope_of, signature, unit_vector

if TYPE_CHECKING:
    from llmlab_grpc.cache.entry import CacheEntry
    from llmlab_grpc.cache.manager import CacheManager
    from llmlab_grpc.proto.llmlab.v1 import cache_pb2

SEARCH_NEIGHBOURS = 8
"""Nearest held entries a ``Search`` runs the guard on (as a local lookup does)."""


class BadSearch(ValueError):
    """A ``Search`` request that cannot be answered: the message says what to fix."""


def query_vector(raw: bytes, dim: int) -> np.ndarray:
    """The sent vector as float32, L2-normalised; ``BadSearch`` for a wrong length or non-finite values."""
    if len(raw) != dim * 4:
        raise BadSearch(f"vector must be {dim} float32 values ({dim * 4} bytes), not {len(raw)} bytes")
    vector = unit_vector(raw, dim)
    if vector is None:
        raise BadSearch("vector must be finite and L2-normalised (norm near 1)")
    return vector


def question_of(lookup: cache_pb2.CacheLookup) -> str:
    """The text a semantic match compares (``semantic_text``, else the prompt); ``BadSearch`` when unusable."""
    text = lookup.semantic_text or lookup.prompt
    if not text.strip():
        raise BadSearch("lookup has no semantic_text or prompt to match")
    if len(text) > MAX_SEMANTIC_CHARS:
        raise BadSearch(f"the question is {len(text)} characters; semantic matching takes at most {MAX_SEMANTIC_CHARS}")
    if not lookup.model:
        raise BadSearch("lookup.model is empty: a semantic match is within one model")
    return text


def scope_of_lookup(lookup: cache_pb2.CacheLookup) -> str:
    """The scope a match must share exactly; raises ``InvalidParams`` for unusable parameters."""
    return lookup_scope(lookup.namespace, lookup.model, lookup.params, lookup.context_hash)


async def search_held(manager: CacheManager, lookup: cache_pb2.CacheLookup, vector: np.ndarray,
                      min_similarity: float, max_age_s: float | None) -> tuple[CacheEntry, float] | None:
    """The best entry this node holds for a peer's question: at or above ``min_similarity`` to
    ``vector``, accepted by the guard, live and young enough. The scan runs off the event loop
    (10 ms at 100k entries)."""
    index = manager.index
    if index is None:
        return None
    text = question_of(lookup)
    scope, sig = scope_of_lookup(lookup), signature(text)
    if not index.has_scope(scope, sig):
        return None
    neighbours = await asyncio.to_thread(index.search, scope, vector, SEARCH_NEIGHBOURS, min_similarity, sig)
    for near in neighbours:
        if refuse(text, near.semantic_text):
            continue
        entry = await manager.aget_by_key(near.key, max_age_s=max_age_s)
        if entry is not None:
            return entry, near.similarity
    return None


def judge(lookup: cache_pb2.CacheLookup, vector: np.ndarray, entry: CacheEntry, min_similarity: float,
          max_age_s: float | None, now_unix_ms: int) -> float | None:
    """The similarity of a peer's (verified) ``entry`` to the question when it answers it, else None.

    Checked here, whatever the peer said: the same scope, the entry's own stored vector at or
    above the threshold, the guard, live and young enough."""
    if scope_of(entry.namespace, entry.model, entry.params, entry.context_hash) != scope_of_lookup(lookup):
        return None
    stored = unit_vector(entry.embedding, len(vector))
    if stored is None:
        return None
    similarity = float(stored @ vector)
    if similarity < min_similarity or refuse(question_of(lookup), entry.semantic_text):
        return None
    if entry.expired(now_unix_ms) or (max_age_s is not None and now_unix_ms - entry.created_unix_ms > max_age_s * 1000):
        return None
    return similarity
