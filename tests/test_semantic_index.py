"""The semantic index's int8 first pass: a search through it returns what a float32 scan returns."""

from __future__ import annotations

import numpy as np
import pytest

from llmlab_grpc.cache.entry import EntryMeta
from llmlab_grpc.cache.keys import InvalidParams, normalize_params
from llmlab_grpc.cache.semantic.index import SemanticIndex, lookup_scope, scope_of, signature
from llmlab_grpc.cache.semantic.scan import error_bound, quantize, reference_scan
from llmlab_grpc.proto.llmlab.v1 import common_pb2

SCOPE = scope_of("", "m", {"temperature": 0.0}, "")


def meta(key: str, vector: np.ndarray, text: str = "") -> EntryMeta:
    return EntryMeta(key=key, prompt=key, model="m", params={"temperature": 0.0}, created_unix_ms=0,
                     expires_unix_ms=1, hits=0, size_bytes=1, checksum="", semantic_text=text or key,
                     embedding=vector.astype(np.float32).tobytes())


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors in tight clusters: many rows within the first pass's error of each other,
    where a shortlist that dropped one would change the answer."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 50), 384)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.01, (n, 384)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_first_pass_similarities_are_within_the_stated_bound() -> None:
    vectors = clustered(500)
    quantized = [quantize(v) for v in vectors]
    codes = np.stack([c for c, _ in quantized])
    scales = np.array([s for _, s in quantized], dtype=np.float32)
    assert np.all(np.abs(codes.astype(np.float32) * scales[:, None] - vectors) <= scales[:, None] / 2 + 1e-7)
    out = np.zeros(500, np.float32)
    for query in clustered(20, seed=1):
        reference_scan(codes, scales, np.zeros(500, np.int64), None, 500, query, out)
        assert np.max(np.abs(out - vectors @ query)) <= error_bound(query, float(scales.max()))


@pytest.mark.parametrize(("k", "floor"), [(1, 0.0), (8, 0.0), (8, 0.95), (40, -1.0), (3, 0.999)])
def test_a_search_through_the_int8_pass_returns_the_float32_answer(k: int, floor: float) -> None:
    """Same keys in the same order and the float32 similarities, with near-duplicates around
    every query (the rows the first pass cannot order among themselves)."""
    vectors = clustered(600)
    index = SemanticIndex()
    for i, v in enumerate(vectors):
        assert index.add(meta(f"k{i}", v))
    for query in np.concatenate([vectors[::97], clustered(8, seed=3)]):
        exact = index.search(SCOPE, query, k=k, floor=floor)
        fast = index.search(SCOPE, query, k=k, floor=floor, scan=reference_scan)
        assert [n.key for n in fast] == [n.key for n in exact]
        assert [n.similarity for n in fast] == pytest.approx([n.similarity for n in exact], abs=1e-6)


def test_the_int8_pass_follows_removals_and_signatures() -> None:
    """A row moved into a removed row's place brings its codes along; rows of another
    signature are never returned."""
    vectors = clustered(300, seed=5)
    index = SemanticIndex()
    texts = ["Why is the sky blue?", "What is 25 times 67?"]
    for i, v in enumerate(vectors):
        index.add(meta(f"k{i}", v, text=texts[i % 2]))
    for i in range(0, 300, 3):
        index.remove(f"k{i}")
    part = index._parts[SCOPE]
    assert part.top_scale >= part.scales[:len(part.keys)].max()  # the bound still covers every row
    sig = signature(texts[1])
    for query in vectors[1::29]:
        exact = index.search(SCOPE, query, k=8, signature=sig)
        fast = index.search(SCOPE, query, k=8, signature=sig, scan=reference_scan)
        assert [n.key for n in fast] == [n.key for n in exact]
        assert all(int(n.key[1:]) % 2 == 1 and int(n.key[1:]) % 3 for n in fast)


def test_a_lookups_scope_is_remembered_and_equal_to_scope_of() -> None:
    for params in (common_pb2.GenerationParams(), common_pb2.GenerationParams(temperature=0.0, max_tokens=64),
                   common_pb2.GenerationParams(stop=["\n"], system_prompt="be brief", seed=3)):
        for _ in range(2):  # computed, then remembered
            assert lookup_scope("ns", "m", params, "ctx") == scope_of("ns", "m", normalize_params(params), "ctx")
    long = common_pb2.GenerationParams(system_prompt="x" * 5000)  # too long to remember: computed each time
    assert lookup_scope("", "m", long, "") == scope_of("", "m", normalize_params(long), "")
    with pytest.raises(InvalidParams):
        lookup_scope("", "m", common_pb2.GenerationParams(temperature=float("nan")), "")


def test_a_search_given_no_scan_uses_the_indexs_own() -> None:
    """A peer's search (``mesh_search``) passes no scan: once the node's embedder has loaded the
    engine build, the index's own is used, with the same answer."""
    vectors = clustered(200, seed=7)
    index = SemanticIndex()
    for i, v in enumerate(vectors):
        index.add(meta(f"k{i}", v))
    calls = []

    def spy(*args: object) -> None:
        calls.append(1)
        reference_scan(*args)  # type: ignore[arg-type]

    exact = index.search(SCOPE, vectors[3], k=5, floor=0.5)
    index.scan = spy  # type: ignore[assignment]
    assert [n.key for n in index.search(SCOPE, vectors[3], k=5, floor=0.5)] == [n.key for n in exact]
    assert calls == [1]
