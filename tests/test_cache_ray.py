"""The Ray store owns its values: an entry outlives the actor that produced its value."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llmlab_grpc.cache import CacheManager, InvalidCacheRequest
from llmlab_grpc.cache.errors import StoreUnavailable
from llmlab_grpc.cache.stores import MemoryStore, make_store
from llmlab_grpc.proto.llmlab.v1 import common_pb2
from tests.cache_support import ray_session  # noqa: F401 - session fixture
from tests.helpers import wait_until


@pytest.fixture
def ray(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("ray_session")


def _owner_is_gone(ray: Any, ref: Any) -> bool:
    from ray.exceptions import GetTimeoutError, OwnerDiedError

    try:
        ray.get(ref, timeout=0.5)
    except OwnerDiedError:
        return True
    except GetTimeoutError:
        return False
    return False


def test_entry_survives_the_death_of_the_actor_that_made_its_value(ray: Any) -> None:
    @ray.remote(num_cpus=0)
    class Generator:
        def answer(self, prompt: str) -> list[Any]:
            # ray.put inside the actor: this object is owned by the actor's worker.
            return [ray.put(f"answer to {prompt}")]

    actor = Generator.remote()
    [ref] = ray.get(actor.answer.remote("Tell me a joke"), timeout=60)
    store = make_store("ray", hot_bytes=0)  # no in-process copy: the read below must come from Ray
    cache = CacheManager(store, node_id="me")
    entry = cache.put_ref("Tell me a joke", "smollm2", ref, {"temperature": 0})
    assert entry.response == "answer to Tell me a joke"
    assert store.flush()  # type: ignore[attr-defined]

    ray.kill(actor, no_restart=True)
    # The original is lost with its owner: reading it now fails ...
    wait_until(lambda: _owner_is_gone(ray, ref), timeout=30, interval=0.2, what="the actor's object to be lost")
    # ... but the cache holds its own copy, owned by this process (the node, Ray's driver).
    assert cache.get("Tell me a joke", "smollm2", {"temperature": 0}) == "answer to Tell me a joke"
    assert cache.get_stats()["lost"] == 0


def test_task_results_can_be_cached_from_their_ref(ray: Any) -> None:
    @ray.remote(num_cpus=0)
    def generate(prompt: str) -> str:
        return prompt.upper()

    for store in (make_store("ray"), MemoryStore()):
        cache = CacheManager(store)
        cache.put_ref("shout", "m", generate.remote("shout"))
        assert cache.get("shout", "m") == "SHOUT"


def test_a_ref_to_something_else_than_text_is_refused(ray: Any) -> None:
    cache = CacheManager(make_store("ray"))
    with pytest.raises(InvalidCacheRequest, match="string"):
        cache.put_ref("p", "m", ray.put({"not": "text"}))
    assert len(cache) == 0


def test_a_lost_value_is_a_miss_not_an_error() -> None:
    class LosingStore(MemoryStore):
        def get(self, handle: Any) -> str:
            raise StoreUnavailable("gone")

    cache = CacheManager(LosingStore())
    cache.put("p", "m", "r")
    assert cache.get("p", "m") is None
    stats = cache.get_stats()
    assert (stats["hits"], stats["misses"], stats["lost"], stats["entries"]) == (0, 1, 1, 0)


def test_puts_write_behind_and_only_hot_values_stay_in_process(ray: Any) -> None:
    store = make_store("ray", hot_bytes=250)
    cache = CacheManager(store)
    for i in range(5):
        cache.put(f"p{i}", "m", str(i) * 100)
    assert store.flush()  # type: ignore[attr-defined]
    stats = cache.get_stats()
    assert stats["store_pending_writes"] == 0
    assert (stats["store_hot_entries"], stats["store_hot_bytes"]) == (2, 200)  # the newest two fit in 250 bytes
    assert cache.get("p0", "m") == "0" * 100  # read from Ray, then hot again
    assert cache.get_stats()["store_hot_bytes"] <= 250
    cache.clear()
    stats = cache.get_stats()
    assert (stats["store_hot_entries"], stats["store_hot_bytes"]) == (0, 0)
    cache.close()


async def test_cold_reads_from_asyncio_are_batched_off_the_loop(ray: Any) -> None:
    store = make_store("ray", hot_bytes=0)
    cache = CacheManager(store)
    keys = [cache.put(f"q{i}", "m", f"answer {i}").key for i in range(40)]
    assert store.flush()  # type: ignore[attr-defined]
    entries = await asyncio.gather(*(cache.aget_by_key(k) for k in keys))
    assert [e.response for e in entries if e is not None] == [f"answer {i}" for i in range(40)]
    assert cache.get_stats()["hits"] == 40
    assert cache.get_stats()["store_hot_entries"] == 0  # hot_bytes 0: nothing kept in process
    cache.close()


async def test_a_value_lost_by_ray_is_a_miss_through_the_async_read_too(ray: Any) -> None:
    class Forgetful(MemoryStore):
        async def aget(self, handle: Any) -> str:
            raise StoreUnavailable("gone")

    cache = CacheManager(Forgetful())
    key = cache.put("p", "m", "r").key
    assert await cache.aget_by_key(key) is None
    stats = cache.get_stats()
    assert (stats["hits"], stats["misses"], stats["lost"], stats["entries"]) == (0, 1, 1, 0)


async def test_with_no_hot_copies_a_hit_keeps_nothing_serialized(ray: Any) -> None:
    store = make_store("ray", hot_bytes=0)
    cache = CacheManager(store)
    key = cache.put("p", "m", "cold answer").key
    assert store.flush()  # type: ignore[attr-defined]
    for hits in (1, 2, 3):  # each read from Ray, off the loop
        hit = await cache.aget_wire(key)
        assert hit is not None and hit[1] == hits
        assert common_pb2.CacheEntry.FromString(hit[0]).response == "cold answer"
    stats = cache.get_stats()
    assert (stats["wire_bytes"], stats["store_hot_entries"], stats["hits"]) == (0, 0, 3)
    cache.close()
