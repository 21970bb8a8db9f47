"""The semantic cache across the mesh, without processes: what a peer answers to ``Replica.Search``
(``search_held``) and how the asker judges what comes back (``judge``), with made-up vectors
(no model needed: the index and the guard only compare vectors and texts)."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from llmlab_grpc.cache.entry import CacheEntry
from llmlab_grpc.cache.manager import CacheManager, EntryExtras
from llmlab_grpc.cache.semantic.index import SemanticIndex
from llmlab_grpc.cache.semantic.mesh_search import BadSearch, judge, query_vector, search_held
from llmlab_grpc.cache.stores import MemoryStore
from llmlab_grpc.proto.llmlab.v1 import cache_pb2, common_pb2

MODEL = "m"
PARAMS = {"temperature": 0.0}


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


def near(v: np.ndarray, similarity: float, seed: int = 99) -> np.ndarray:
    """A unit vector at exactly ``similarity`` to ``v``."""
    other = unit(seed)
    other -= (other @ v) * v
    other /= np.linalg.norm(other)
    out = similarity * v + np.sqrt(1 - similarity**2) * other
    return (out / np.linalg.norm(out)).astype(np.float32)


def lookup_of(text: str, namespace: str = "", model: str = MODEL) -> cache_pb2.CacheLookup:
    return cache_pb2.CacheLookup(prompt=text, semantic_text=text, model=model, namespace=namespace,
                                 params=common_pb2.GenerationParams(temperature=0.0))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def holder(clock: Clock | None = None) -> tuple[CacheManager, CacheEntry, np.ndarray]:
    """A cache with an index holding "Who painted the Mona Lisa?" at vector ``unit(1)``."""
    manager = CacheManager(MemoryStore(), clock=clock or Clock())
    manager.index = SemanticIndex()
    vector = unit(1)
    entry = manager.put("Who painted the Mona Lisa?", MODEL, "Leonardo da Vinci.", PARAMS,
                        extras=EntryExtras(semantic_text="Who painted the Mona Lisa?", embedding=vector.tobytes()))
    held = manager.get_entry(entry.key)
    assert held is not None
    return manager, held, vector


def test_the_sent_vector_must_have_the_index_dimensions_and_be_normalised() -> None:
    assert np.allclose(query_vector(unit(3).tobytes(), 384), unit(3))
    assert np.isclose(np.linalg.norm(query_vector((unit(3) * 1.2).tobytes(), 384)), 1.0)  # renormalised
    for raw, why in [(unit(3)[:100].tobytes(), "384 float32"), (b"\x00" * 1536, "normalised"),
                     (np.full(384, np.nan, np.float32).tobytes(), "finite"), ((unit(3) * 5).tobytes(), "normalised")]:
        with pytest.raises(BadSearch, match=why):
            query_vector(raw, 384)


def test_a_peer_answers_its_best_guarded_match_and_nothing_for_a_near_miss() -> None:
    manager, held, vector = holder()
    found = asyncio.run(search_held(manager, lookup_of("Who was the painter of the Mona Lisa?"),
                                    near(vector, 0.95), 0.9, None))
    assert found is not None and found[0].key == held.key and found[0].response == "Leonardo da Vinci."
    assert found[1] == pytest.approx(0.95, abs=1e-4)
    # the same vector, but a question the guard refuses (another salient token): no answer
    assert asyncio.run(search_held(manager, lookup_of("Who painted the Mona Lisa in 1503?"),
                                   near(vector, 0.95), 0.9, None)) is None
    # below the threshold, another scope (namespace, model): no answer
    assert asyncio.run(search_held(manager, lookup_of("Who was the painter of the Mona Lisa?"),
                                   near(vector, 0.85), 0.9, None)) is None
    assert asyncio.run(search_held(manager, lookup_of("Who was the painter of the Mona Lisa?", namespace="other"),
                                   near(vector, 0.95), 0.9, None)) is None
    assert asyncio.run(search_held(CacheManager(MemoryStore()), lookup_of("Who painted the Mona Lisa?"),
                                   vector, 0.9, None)) is None  # no index: nothing held


def test_a_peer_honours_the_max_age() -> None:
    clock = Clock()
    manager, _, vector = holder(clock)
    clock.now += 120
    asked = lookup_of("Who was the painter of the Mona Lisa?")
    assert asyncio.run(search_held(manager, asked, near(vector, 0.95), 0.9, 60.0)) is None
    assert asyncio.run(search_held(manager, asked, near(vector, 0.95), 0.9, 300.0)) is not None


def test_the_asker_judges_the_entry_itself_whatever_the_peer_said() -> None:
    _, held, vector = holder()
    asked = lookup_of("Who was the painter of the Mona Lisa?")
    now = held.created_unix_ms + 1000
    assert judge(asked, near(vector, 0.95), held, 0.9, None, now) == pytest.approx(0.95, abs=1e-4)
    # the similarity comes from the entry's own stored vector, not from the peer's reply
    assert judge(asked, near(vector, 0.8), held, 0.9, None, now) is None
    # the guard runs on the asker too
    assert judge(lookup_of("Who painted the Mona Lisa in 1503?"), near(vector, 0.95), held, 0.9, None, now) is None
    # another scope: model or namespace
    assert judge(lookup_of("Who was the painter of the Mona Lisa?", model="other"), near(vector, 0.95), held, 0.9,
                 None, now) is None
    assert judge(lookup_of("Who was the painter of the Mona Lisa?", namespace="team"), near(vector, 0.95), held,
                 0.9, None, now) is None
    # too old, expired, or carrying a broken vector
    assert judge(asked, near(vector, 0.95), held, 0.9, 0.5, now) is None
    assert judge(asked, near(vector, 0.95), held, 0.9, None, held.expires_unix_ms) is None
    forged = dataclasses.replace(held, embedding=(vector * 10).tobytes())
    assert judge(asked, near(vector, 0.95), forged, 0.9, None, now) is None
    assert judge(asked, near(vector, 0.95), dataclasses.replace(held, embedding=b""), 0.9, None, now) is None
