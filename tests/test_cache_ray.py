"""The Ray store owns its values: an entry outlives the actor that produced its value."""

from __future__ import annotations

from typing import Any

import pytest

from llmlab_grpc.cache import CacheManager, InvalidCacheRequest
from llmlab_grpc.cache.errors import StoreUnavailable
from llmlab_grpc.cache.stores import MemoryStore, make_store
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
    cache = CacheManager(make_store("ray"), node_id="me")
    entry = cache.put_ref("Tell me a joke", "smollm2", ref, {"temperature": 0})
    assert entry.response == "answer to Tell me a joke"

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
