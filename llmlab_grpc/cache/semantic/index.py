"""A node's semantic index: the vectors of its cached questions, searched by brute force.

One partition per *scope* (namespace, model, generation parameters, earlier turns): a
semantic hit must match those exactly, so a lookup only ever scans the vectors that
could answer it. Each row also carries its question's *signature* (what the guard
requires to be equal: salient tokens, negation, kind of answer): a question whose
signature no entry of its scope shares misses without being embedded ("What is 25 times
68?" beside "... 67?" costs nothing), and a search masks the rows of other signatures
before picking the top few. Each partition is a C-contiguous float32 matrix grown by
doubling with a row per entry, the same rows as int8 codes with a float32 scale each, and a
float32 buffer for the similarities allocated with them. With the engine build's scan
(``scan.Int8Scan``, passed by the caller that embedded the question) a search reads the int8
codes (a quarter of the bytes: the scan is bound by memory bandwidth) and re-scores in float32
only the rows the first pass's error bound cannot rule out, so it returns what the float32 scan
returns; without it, the float32 matrix-vector product is numpy's own single-threaded
``einsum`` loop, not BLAS: OpenBLAS's ``sgemv`` runs on every core and its threads spin after
each call, which on a busy 2-core machine made a 10k-entry scan take 5 ms at the median and
200 ms at p99 (and took the core the embedding was using). Vectors are L2-normalised, so the
product is the cosine similarity; an ``argpartition`` picks the top few; nothing is rebuilt or
allocated per lookup but the few top rows. Measured on this machine (docs/cache.md): 10k entries
0.5-0.9 ms with the int8 pass against 1.1-1.9 ms float32, 100k 6-12 against 20-44 ms, below the
embedding of the question, so no ANN library is needed at the sizes a node's cache holds (its
entry cap is 100k).

Thread-safe (one lock); the index is advisory: it may briefly name a key the cache just
dropped, and the caller then reads the entry from the cache and skips it.
"""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmlab_grpc.cache.entry import EntryMeta
from llmlab_grpc.cache.keys import KEY_MEMO_ENTRIES, KEY_MEMO_MAX_CHARS, normalize_params
from llmlab_grpc.cache.semantic.embedder import MAX_SEMANTIC_CHARS
from llmlab_grpc.cache.semantic.guard import features
from llmlab_grpc.cache.semantic.scan import Int8Scan, error_bound, quantize
from llmlab_grpc.proto.llmlab.v1 import common_pb2

DIM = 384


def scope_of(namespace: str, model: str, params: dict[str, Any], context_hash: str) -> str:
    """What a semantic hit must share exactly with its question, as one string."""
    return json.dumps([namespace, model, params, context_hash], sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=KEY_MEMO_ENTRIES)
def _remembered_scope(namespace: str, model: str, params: bytes, context_hash: str) -> str:
    return scope_of(namespace, model, normalize_params(common_pb2.GenerationParams.FromString(params)), context_hash)


def lookup_scope(namespace: str, model: str, params: common_pb2.GenerationParams, context_hash: str) -> str:
    """``scope_of`` a lookup's fields, its params a proto: remembered like the exact cache's keys
    (``keys.KEY_MEMO_ENTRIES`` of them, inputs of at most ``KEY_MEMO_MAX_CHARS`` each), since
    normalising the params and writing the JSON took 60-130 us of every semantic lookup. Invalid
    params raise ``InvalidParams`` and are not remembered."""
    if len(namespace) + len(model) + len(context_hash) <= KEY_MEMO_MAX_CHARS:
        raw = params.SerializeToString(deterministic=True)
        if len(raw) <= KEY_MEMO_MAX_CHARS:
            return _remembered_scope(namespace, model, raw, context_hash)
    return scope_of(namespace, model, normalize_params(params), context_hash)


def unit_vector(raw: bytes, dim: int = DIM) -> np.ndarray | None:
    """``raw`` (float32 bytes) L2-normalised; None for another length, a value that is not finite or
    a norm far from 1: a forged or broken vector is never indexed, never searched with, never compared."""
    if len(raw) != dim * 4:
        return None
    vector = np.frombuffer(raw, dtype="<f4")
    if not np.all(np.isfinite(vector)):
        return None
    norm = float(np.linalg.norm(vector))
    return vector / norm if 0.5 < norm < 2.0 else None


def signature(text: str) -> int:
    """What the guard requires to be *equal* between a question and a cached one (its salient
    tokens, negation and kind of answer), hashed to 64 bits: a collision only means a search
    scans rows the guard then refuses, never a wrong hit."""
    f = features(text)
    return hash((f.hard, f.negated, tuple(sorted(f.asks))))


ROW_OVERHEAD = 176
"""Bytes of bookkeeping per indexed entry besides its vector, codes, similarity slot and
signature: a list slot for the key and for the text, the key's dict slot, its (scope, row) tuple
and row number, and its signature's count when no other row shares it (measured with
tracemalloc: ~110, ~150 when every entry has its own signature, and up to ~167 in a test process
that had run the engine and mesh tests first; tests/test_semantic_guard.py checks the count
covers it)."""


def row_bytes(dim: int = DIM) -> int:
    """What indexing one entry costs the node: its float32 row, its int8 codes and their scale,
    its similarity slot, its signature (int64) and bookkeeping."""
    return dim * 4 + dim + 4 + 4 + 8 + ROW_OVERHEAD


@dataclass
class _Partition:
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((8, DIM), dtype=np.float32))
    codes: np.ndarray = field(default_factory=lambda: np.zeros((8, DIM), dtype=np.int8))
    scales: np.ndarray = field(default_factory=lambda: np.zeros(8, dtype=np.float32))
    sims: np.ndarray = field(default_factory=lambda: np.zeros(8, dtype=np.float32))
    sig_ids: np.ndarray = field(default_factory=lambda: np.zeros(8, dtype=np.int64))
    scope: str = ""
    top_scale: float = 0.0
    """At least the largest scale of a row in use (kept on removal, recomputed on resize)."""
    keys: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    signatures: dict[int, int] = field(default_factory=dict)
    """signature -> rows that have it"""

    def resize(self, rows: int) -> None:
        """Capacity ``rows`` (at least the rows in use), copying the rows in use."""
        used = len(self.keys)
        vectors = np.zeros((rows, self.vectors.shape[1]), dtype=np.float32)
        vectors[:used] = self.vectors[:used]
        codes = np.zeros((rows, self.vectors.shape[1]), dtype=np.int8)
        codes[:used] = self.codes[:used]
        scales = np.zeros(rows, dtype=np.float32)
        scales[:used] = self.scales[:used]
        sig_ids = np.zeros(rows, dtype=np.int64)
        sig_ids[:used] = self.sig_ids[:used]
        self.vectors, self.codes, self.scales, self.sig_ids = vectors, codes, scales, sig_ids
        self.top_scale = float(scales[:used].max()) if used else 0.0
        self.sims = np.zeros(rows, dtype=np.float32)

    def count(self, sig: int, delta: int) -> None:
        """``delta`` more rows with signature ``sig`` (it is forgotten with its last row)."""
        rows = self.signatures.get(sig, 0) + delta
        if rows > 0:
            self.signatures[sig] = rows
        else:
            self.signatures.pop(sig, None)


@dataclass(frozen=True)
class Neighbour:
    key: str
    semantic_text: str
    similarity: float


class SemanticIndex:
    """Vectors of cached questions by scope; ``add``/``remove`` follow the cache, ``search`` answers lookups."""

    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim
        self._lock = threading.Lock()
        self._parts: dict[str, _Partition] = {}
        self._where: dict[str, tuple[str, int]] = {}  # key -> (scope, row)
        self.scan: Int8Scan | None = None
        """The engine build's int8 scan once the node's embedder has loaded it (``SemanticCache``
        sets it): a search given none (a peer's, ``mesh_search``) uses this one."""

    def __len__(self) -> int:
        return len(self._where)

    def add(self, entry: EntryMeta) -> bool:
        """Index ``entry`` (its ``embedding`` and scope); False when its vector is unusable."""
        if len(entry.semantic_text) > MAX_SEMANTIC_CHARS:
            return False  # a node never embeds such a question; a peer's copy is matched exactly only
        vector = unit_vector(entry.embedding, self.dim)
        if vector is None:  # a forged or broken vector: never indexed
            return False
        scope = scope_of(entry.namespace, entry.model, entry.params, entry.context_hash)
        with self._lock:
            self._remove_locked(entry.key)
            part = self._parts.get(scope)
            if part is None:
                part = self._parts[scope] = _Partition(np.zeros((8, self.dim), dtype=np.float32),
                                                       np.zeros((8, self.dim), dtype=np.int8), scope=scope)
            scope = part.scope  # one string per partition, not one per row
            row = len(part.keys)
            if row == part.vectors.shape[0]:
                part.resize(row * 2)
            part.vectors[row] = vector
            part.codes[row], part.scales[row] = quantize(part.vectors[row])
            part.top_scale = max(part.top_scale, float(part.scales[row]))
            sig = signature(entry.semantic_text)
            part.sig_ids[row] = sig
            part.count(sig, 1)
            part.keys.append(entry.key)
            part.texts.append(entry.semantic_text)
            self._where[entry.key] = (scope, row)
        return True

    def row_cost(self, embedding: bytes) -> int:
        """What indexing an entry with ``embedding`` costs: the cache counts it in the entry's bytes."""
        return row_bytes(self.dim) if len(embedding) == self.dim * 4 else 0

    def remove(self, key: str) -> None:
        with self._lock:
            self._remove_locked(key)

    def clear(self) -> None:
        with self._lock:
            self._parts.clear()
            self._where.clear()

    def _remove_locked(self, key: str) -> None:
        found = self._where.pop(key, None)
        if found is None:
            return
        scope, row = found
        part = self._parts[scope]
        last = len(part.keys) - 1
        part.count(int(part.sig_ids[row]), -1)
        if row != last:  # move the last row into the hole
            part.vectors[row] = part.vectors[last]
            part.codes[row] = part.codes[last]
            part.scales[row] = part.scales[last]
            part.sig_ids[row] = part.sig_ids[last]
            part.keys[row] = part.keys[last]
            part.texts[row] = part.texts[last]
            self._where[part.keys[row]] = (scope, row)
        part.keys.pop()
        part.texts.pop()
        if not part.keys:
            del self._parts[scope]
        elif last < part.vectors.shape[0] // 4 and part.vectors.shape[0] > 64:  # shrink after mass removal
            part.resize(max(64, part.vectors.shape[0] // 2))

    def has_scope(self, scope: str, signature: int | None = None) -> bool:
        """Whether any entry shares ``scope`` (and ``signature``): a lookup that has none cannot
        hit, so it skips the embedding."""
        with self._lock:
            part = self._parts.get(scope)
            return part is not None and (signature is None or signature in part.signatures)

    def search(self, scope: str, vector: np.ndarray, k: int = 8, floor: float = 0.0,
               signature: int | None = None, scan: Int8Scan | None = None) -> list[Neighbour]:
        """The ``k`` most similar questions of ``scope`` (with ``signature`` only, when given) at
        or above ``floor``, most similar first. With ``scan`` (the engine build's int8 pass) the
        rows are scanned as int8 codes and only those that could be in the answer are scored
        in float32: the same answer, a quarter of the bytes read."""
        query = np.ascontiguousarray(vector, dtype=np.float32)
        scan = scan or self.scan
        with self._lock:
            part = self._parts.get(scope)
            if part is None or (signature is not None and signature not in part.signatures):
                return []
            n = len(part.keys)
            if scan is not None:
                rows, sims = self._shortlist(part, n, query, k, floor, signature, scan)
            else:
                rows = np.arange(n)
                sims = part.sims[:n]
                np.einsum("ij,j->i", part.vectors[:n], query, out=sims)  # one thread, no BLAS pool
                if signature is not None:
                    sims[part.sig_ids[:n] != signature] = -np.inf  # rows the guard would refuse anyway
            m = len(rows)
            top = np.argpartition(sims, m - k)[m - k:] if m > k else np.arange(m)
            top = top[np.lexsort((rows[top], -sims[top]))]  # ties: the earlier row first, in both ways
            return [Neighbour(part.keys[rows[i]], part.texts[rows[i]], float(sims[i]))
                    for i in top if sims[i] >= floor]

    @staticmethod
    def _shortlist(part: _Partition, n: int, query: np.ndarray, k: int, floor: float, signature: int | None,
                   scan: Int8Scan) -> tuple[np.ndarray, np.ndarray]:
        """The rows that could be among the ``k`` best at or above ``floor``, and their float32
        similarities. The int8 pass puts every row within ``bound`` of its float32 similarity, so
        a row below ``floor - bound`` cannot reach the floor, and one more than ``2 * bound``
        below the k-th best first-pass score cannot beat ``k`` rows that are surely above it."""
        approx = part.sims[:n]
        scan(part.codes, part.scales, part.sig_ids, signature, n, query, approx)
        bound = error_bound(query, part.top_scale)
        rows = np.flatnonzero(approx >= floor - bound)
        if len(rows) > k:
            shortlisted = approx[rows]
            kth = np.partition(shortlisted, len(rows) - k)[len(rows) - k]
            rows = rows[shortlisted >= kth - 2 * bound]
        sims = np.einsum("ij,j->i", part.vectors[rows], query) if len(rows) else np.zeros(0, np.float32)
        return rows, sims
