"""CacheManager behaviour, run unchanged against both stores (memory and ray)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any

import pytest

from llmlab_grpc.cache import (
    CacheEntry,
    CacheListener,
    CacheManager,
    CorruptEntry,
    InvalidCacheRequest,
    ValueTooLarge,
    cache_key,
)
from llmlab_grpc.cache.entry import stored_bytes
from llmlab_grpc.cache.keys import checksum
from llmlab_grpc.cache.stores import ValueStore, make_store
from llmlab_grpc.proto.llmlab.v1 import common_pb2
from tests.cache_support import FakeClock, ray_session  # noqa: F401 - session fixture


@pytest.fixture(params=["memory", "ray"])
def store(request: pytest.FixtureRequest) -> ValueStore:
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    return make_store(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def manager_of(store: ValueStore, clock: FakeClock, **limits: Any) -> CacheManager:
    return CacheManager(store, clock=clock, node_id="me", **limits)


def _cost(prompt: str, response: str) -> int:
    return stored_bytes(cache_key(prompt, "m"), prompt, "m", {}, response)


class Recorder(CacheListener):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def on_put(self, entry: CacheEntry) -> None:
        self.events.append(("put", entry.key, entry.response))

    def on_delete(self, key: str, reason: str) -> None:
        self.events.append(("delete", key, reason))


def test_miss_then_hit(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock)
    assert cache.get("Tell me a joke", "smollm2", {"temperature": 0}) is None
    entry = cache.put("Tell me a joke", "smollm2", "Why did the chicken…", {"temperature": 0})
    assert entry.key == cache_key("Tell me a joke", "smollm2", {"temperature": 0})
    assert entry.primary_node_id == "me"
    assert entry.size_bytes == len("Why did the chicken…".encode())
    assert cache.get("Tell me a joke", "smollm2", {"temperature": 0}) == "Why did the chicken…"
    assert cache.get("Tell me a joke", "smollm2", {"temperature": 0.5}) is None
    assert cache.get("Tell me a joke", "other-model", {"temperature": 0}) is None
    stats = cache.get_stats()
    assert (stats["hits"], stats["misses"], stats["puts"], stats["entries"]) == (1, 3, 1, 1)
    assert stats["hit_ratio"] == pytest.approx(0.25)
    assert stats["bytes"] == entry.stored_bytes == stored_bytes(entry.key, entry.prompt, entry.model, entry.params,
                                                                entry.response)
    assert stats["store"] == store.name


def test_stats_proto_matches_dict(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock, max_bytes=10_000, max_entries=10, max_value_bytes=100)
    entry = cache.put("p", "m", "r")
    cache.get("p", "m")
    proto = cache.stats_proto()
    assert (proto.hits, proto.puts, proto.entries, proto.bytes) == (1, 1, 1, entry.stored_bytes)
    assert (proto.max_bytes, proto.max_entries, proto.store) == (10_000, 10, store.name)
    assert proto.hit_ratio == 1.0


def test_hit_counts_and_peeks(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock)
    key = cache.put("p", "m", "r").key
    for _ in range(3):
        cache.get_by_key(key)
    peek = cache.get_entry(key)
    assert peek is not None and peek.hits == 3 and peek.response == "r"
    assert cache.get_stats()["hits"] == 3  # peeking counted nothing
    assert cache.contains(key) and not cache.contains("0" * 64)
    assert cache.get_entry("0" * 64) is None and cache.get_stats()["misses"] == 0


def test_put_replaces_and_keeps_hotness(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock)
    cache.put("p", "m", "first")
    cache.get("p", "m")
    entry = cache.put("p", "m", "second answer")
    assert cache.get("p", "m") == "second answer"
    assert entry.hits == 1
    stats = cache.get_stats()
    assert (stats["entries"], stats["bytes"], stats["puts"]) == (1, _cost("p", "second answer"), 2)


def test_ttl_expiry_with_injected_clock(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock, ttl_s=60)
    cache.put("default", "m", "a")
    cache.put("short", "m", "b", ttl=5)
    clock.advance(4.999)
    assert cache.get("short", "m") == "b"
    clock.advance(0.001)
    assert cache.get("short", "m") is None  # never returned at or after its expiry
    assert cache.get("default", "m") == "a"
    clock.advance(56)
    assert cache.get_entry(cache_key("default", "m")) is None
    stats = cache.get_stats()
    assert (stats["expirations"], stats["entries"], stats["bytes"]) == (2, 0, 0)


def test_sweep_reclaims_expired_entries_without_access(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock, ttl_s=10)
    for i in range(5):
        cache.put(f"p{i}", "m", "x" * 10, ttl=1 + i)
    clock.advance(3)
    assert cache.sweep() == 3
    assert cache.get_stats()["entries"] == 2 and cache.get_stats()["bytes"] == _cost("p3", "x" * 10) * 2
    assert cache.sweep() == 0
    clock.advance(100)
    assert cache.sweep() == 2 and len(cache) == 0
    assert cache.get_stats()["expirations"] == 5


def test_a_refreshed_entry_gets_its_new_ttl(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock, ttl_s=10)
    cache.put("p", "m", "old", ttl=1)
    cache.put("p", "m", "new", ttl=100)
    clock.advance(50)
    assert cache.sweep() == 0  # the stale heap item of the first put expires nothing
    assert cache.get("p", "m") == "new"


def test_invalid_ttl_is_refused(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock)
    with pytest.raises(InvalidCacheRequest, match="ttl"):
        cache.put("p", "m", "r", ttl=0)


def test_lru_order_with_entry_cap(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock, max_entries=3)
    for name in "abc":
        cache.put(name, "m", name.upper())
    assert cache.get("a", "m") == "A"  # a is now most recent; b is least
    cache.put("d", "m", "D")
    assert cache.get_entry(cache_key("b", "m")) is None
    assert [cache.get(n, "m") for n in "acd"] == ["A", "C", "D"]
    stats = cache.get_stats()
    assert (stats["evictions"], stats["entries"]) == (1, 3)


def test_byte_budget_eviction(store: ValueStore, clock: FakeClock) -> None:
    small, big = _cost("a", "a" * 40), _cost("d", "d" * 1300)
    cache = manager_of(store, clock, max_bytes=small * 2 + 10, max_value_bytes=2000)
    assert big < small * 2 + 10
    cache.put("a", "m", "a" * 40)
    cache.put("b", "m", "b" * 40)
    cache.get("a", "m")
    cache.put("c", "m", "c" * 40)  # three over the budget: evict the LRU one, b
    assert cache.get("b", "m") is None
    assert cache.get("a", "m") == "a" * 40 and cache.get("c", "m") == "c" * 40
    cache.put("d", "m", "d" * 1300)  # a (least recent) goes, then c too
    assert len(cache) == 1 and cache.get_stats()["bytes"] == big
    assert cache.get_stats()["evictions"] == 3


def test_expired_entries_go_before_live_ones_are_evicted(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock, max_entries=2)
    cache.put("old", "m", "x", ttl=1)
    cache.put("live", "m", "y", ttl=100)
    clock.advance(2)
    cache.put("new", "m", "z")
    assert cache.get("live", "m") == "y"
    stats = cache.get_stats()
    assert (stats["evictions"], stats["expirations"]) == (0, 1)


def test_oversize_values_are_refused_with_the_limit_named(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock, max_value_bytes=16, max_prompt_bytes=16)
    with pytest.raises(ValueTooLarge, match=r"17 bytes.*at most 16 bytes.*cache_max_value_bytes"):
        cache.put("p", "m", "x" * 17)
    with pytest.raises(ValueTooLarge, match=r"prompt.*cache_max_prompt_bytes"):
        cache.put("p" * 17, "m", "ok")
    with pytest.raises(ValueTooLarge):
        cache.put("p", "m", "é" * 9)  # 18 UTF-8 bytes
    assert isinstance(ValueTooLarge("x"), ValueError)
    cache.put("p", "m", "x" * 16)
    stats = cache.get_stats()
    assert (stats["puts"], stats["entries"]) == (1, 1)


def test_empty_model_is_refused(store: ValueStore, clock: FakeClock) -> None:
    with pytest.raises(InvalidCacheRequest, match="model"):
        manager_of(store, clock).put("p", "", "r")


def test_delete_and_clear(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock)
    key = cache.put("p", "m", "r").key
    cache.put("q", "m", "s")
    assert cache.delete(key) is True
    assert cache.delete(key) is False
    assert cache.get("p", "m") is None
    assert cache.delete_lookup("q", "m") is True
    for i in range(4):
        cache.put(f"k{i}", "m", "v")
    assert cache.clear() == 4
    stats = cache.get_stats()
    assert (stats["entries"], stats["bytes"], stats["puts"]) == (0, 0, 6)


def test_listeners_hear_puts_and_removals(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock, max_entries=2)
    rec = Recorder()

    class Broken(CacheListener):
        def on_put(self, entry: CacheEntry) -> None:
            raise RuntimeError("listener bug")

    cache.add_listener(Broken())
    cache.add_listener(rec)
    a = cache.put("a", "m", "A", ttl=1).key
    b = cache.put("b", "m", "B").key
    c = cache.put("c", "m", "C").key  # evicts a
    clock.advance(2)
    cache.delete(b)
    d = cache.put("d", "m", "D", ttl=1).key
    clock.advance(2)
    cache.sweep()
    cache.clear()
    assert rec.events == [
        ("put", a, "A"), ("put", b, "B"), ("delete", a, "evicted"), ("put", c, "C"),
        ("delete", b, "deleted"), ("put", d, "D"), ("delete", d, "expired"), ("delete", c, "cleared"),
    ]


def test_put_entry_keeps_metadata_and_counts_replicas(store: ValueStore, clock: FakeClock) -> None:
    origin = manager_of(make_store("memory"), clock)
    original = origin.put("p", "m", "answer", {"seed": 7}, critical=True)
    original = CacheEntry(**{**original.as_dict(), "primary_node_id": "other", "hits": 9})
    cache = manager_of(store, clock)
    rec = Recorder()
    cache.add_listener(rec)
    stored = cache.put_entry(original.to_proto())
    assert stored is not None
    assert (stored.primary_node_id, stored.hits, stored.critical) == ("other", 9, True)
    assert stored.expires_unix_ms == original.expires_unix_ms
    assert cache.get("p", "m", {"seed": 7}) == "answer"
    assert cache.get_stats()["replica_entries"] == 1
    assert rec.events == []  # replica writes are not announced unless asked
    cache.put_entry(original, notify=True)
    assert rec.events == [("put", original.key, "answer")]
    cache.delete(original.key)
    assert cache.get_stats()["replica_entries"] == 0


def test_put_entry_refuses_corruption_and_never_resurrects(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock)
    good = manager_of(make_store("memory"), clock).put("p", "m", "answer", ttl=10)
    with pytest.raises(CorruptEntry, match="checksum"):
        cache.put_entry(CacheEntry(**{**good.as_dict(), "response": "tampered"}))
    with pytest.raises(CorruptEntry, match="key"):
        cache.put_entry(CacheEntry(**{**good.as_dict(), "prompt": "other prompt"}))
    clock.advance(11)
    assert cache.put_entry(good) is None
    assert len(cache) == 0


def test_describe_lists_hottest_first(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock)
    for name, reads in (("cold", 0), ("hot", 5), ("warm", 2)):
        cache.put(name, "m", name)
        for _ in range(reads):
            cache.get(name, "m")
    cache.put("vip", "m", "v", critical=True)
    assert [m.prompt for m in cache.describe()] == ["vip", "hot", "warm", "cold"]
    assert [m.prompt for m in cache.describe(limit=2)] == ["vip", "hot"]
    assert [m.prompt for m in cache.describe(hottest_first=False)] == ["cold", "hot", "warm", "vip"]


def test_concurrent_threads_lose_no_update(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock)
    cache.put("hot", "m", "H")
    threads_n, per_thread = 8, 60
    start = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            start.wait(timeout=10)
            for i in range(per_thread):
                cache.put(f"t{t}-{i}", "m", f"v{t}-{i}")
                assert cache.get(f"t{t}-{i}", "m") == f"v{t}-{i}"
                assert cache.get("hot", "m") == "H"
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert not errors
    total = threads_n * per_thread
    stats = cache.get_stats()
    assert (stats["puts"], stats["hits"], stats["misses"], stats["entries"]) == (total + 1, 2 * total, 0, total + 1)
    hot = cache.get_entry(cache_key("hot", "m"))
    assert hot is not None and hot.hits == total


async def test_concurrent_asyncio_tasks_lose_no_update(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock, max_entries=50)

    async def task(n: int) -> None:
        for i in range(10):
            cache.put(f"k{(n * 10 + i) % 80}", "m", f"v{n}")
            await asyncio.sleep(0)
            cache.get("k0", "m")

    await asyncio.wait_for(asyncio.gather(*(task(n) for n in range(40))), timeout=60)
    stats = cache.get_stats()
    assert stats["puts"] == 400
    assert stats["hits"] + stats["misses"] == 400
    assert stats["entries"] == 50 == len(cache)
    assert stats["bytes"] == sum(m.stored_bytes for m in cache.describe())


# -- every stored byte counts (issue 16) ----------------------------------------------------------------

MiB = 1024 * 1024


def _retained_while(work: Any) -> int:
    """Bytes of Python memory still held after ``work()`` (tracemalloc), with the garbage collected."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("prompt_bytes", [MiB, 100 * 1024])
def test_400_big_prompts_with_a_1_mib_budget_stay_within_it(clock: FakeClock, prompt_bytes: int) -> None:
    """The issue's attack: 403 puts of 1 MiB prompts with a 1 MiB budget grew RSS by ~448 MB while the
    statistics said 32,000 bytes. Now the statistics count the prompts and so does the budget."""
    cache = CacheManager(make_store("memory"), clock=clock, node_id="me", max_bytes=MiB)
    refused = 0

    def attack() -> None:
        nonlocal refused
        for i in range(400):
            try:
                cache.put(f"{i:04d}" + "x" * (prompt_bytes - 4), "smollm2", f"answer {i}")
            except ValueTooLarge:
                refused += 1

    retained = _retained_while(attack)
    stats = cache.get_stats()
    assert stats["bytes"] <= MiB
    assert stats["bytes"] == sum(m.stored_bytes for m in cache.describe())
    assert retained <= MiB + 64 * 1024, f"{retained} bytes retained for a {MiB}-byte budget"
    if prompt_bytes == MiB:  # a prompt the size of the whole budget cannot fit with its metadata
        assert refused == 400 and stats["entries"] == 0
    else:
        assert refused == 0 and stats["entries"] == MiB // (prompt_bytes + 1300)
        assert stats["evictions"] == 400 - stats["entries"]


def test_params_and_model_count_and_have_limits(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock, max_params_bytes=1000)
    plain = cache.put("p", "m", "r")
    system = cache.put("p", "m", "r", {"system_prompt": "s" * 900})
    assert system.stored_bytes - plain.stored_bytes >= 900
    with pytest.raises(ValueTooLarge, match=r"params.*cache_max_params_bytes"):
        cache.put("p", "m", "r", {"tools_json": '["' + "t" * 1000 + '"]'})
    with pytest.raises(InvalidCacheRequest, match="model name"):
        cache.put("p", "m" * 2000, "r")
    wide = cache.put("a" * 1000 + "\U0001f600", "m", "r")  # kept at 4 bytes a character by Python
    assert wide.stored_bytes - plain.stored_bytes >= 4 * 1000


def test_a_copy_obeys_the_same_limits_and_no_time_beyond_the_clock(store: ValueStore, clock: FakeClock) -> None:
    source = CacheManager(store, clock=clock, node_id="peer")
    far = source.put("p", "m", "r", ttl=10**9)  # capped at the source too
    assert far.expires_unix_ms - far.created_unix_ms == int(source.max_ttl_s * 1000)
    year_2200 = 7_258_118_400_000
    forged = dataclasses.replace(far, created_unix_ms=year_2200 - 1, expires_unix_ms=year_2200)
    cache = manager_of(make_store("memory"), clock, max_prompt_bytes=16, max_ttl_s=3600)
    kept = cache.put_entry(forged)
    assert kept is not None
    now = int(clock() * 1000)
    assert kept.created_unix_ms <= now and kept.expires_unix_ms == now + 3600 * 1000
    big = source.put("p" * 17, "m", "r")
    with pytest.raises(ValueTooLarge, match="cache_max_prompt_bytes"):
        cache.put_entry(big.to_proto())


# -- serialized hits (aget_wire, cache/wire.py) ------------------------------------------------------


async def _wire_response(cache: CacheManager, prompt: str) -> str | None:
    hit = await cache.aget_wire(cache_key(prompt, "m"))
    if hit is None:
        return None
    wire, hits = hit
    entry = common_pb2.CacheEntry.FromString(wire)
    assert entry.hits == 0 and hits >= 1  # the count is the caller's to append
    return entry.response


async def test_serialized_hits_follow_their_entry(store: ValueStore, clock: FakeClock) -> None:
    cache = manager_of(store, clock)
    cache.put("p", "m", "one", ttl=10)
    assert await _wire_response(cache, "p") == "one"
    kept = cache.get_stats()["wire_bytes"]
    assert kept > 0
    cache.put("p", "m", "two", ttl=10)  # replaced: the new value, never the kept bytes
    assert cache.get_stats()["wire_bytes"] == 0
    assert await _wire_response(cache, "p") == "two"
    copy = cache.get_entry(cache_key("p", "m"))
    assert copy is not None
    cache.put_entry(dataclasses.replace(copy, response="three", checksum=checksum("three")))  # a replica's write
    assert await _wire_response(cache, "p") == "three"
    assert cache.delete(cache_key("p", "m"))
    assert await _wire_response(cache, "p") is None and cache.get_stats()["wire_bytes"] == 0
    cache.put("q", "m", "four", ttl=10)
    assert await _wire_response(cache, "q") == "four"
    clock.advance(11)
    assert await _wire_response(cache, "q") is None  # expired
    cache.put("r", "m", "five")
    assert await _wire_response(cache, "r") == "five" and cache.get_stats()["wire_bytes"] > 0
    cache.clear()
    stats = cache.get_stats()
    assert (stats["wire_bytes"], stats["hits"], stats["misses"]) == (0, 5, 2)


async def test_serialized_hits_use_spare_budget_only_and_go_first(store: ValueStore, clock: FakeClock) -> None:
    entry_cost = _cost("a", "a" * 40)
    probe = manager_of(make_store("memory"), clock)
    probe.put("a", "m", "a" * 40)
    await _wire_response(probe, "a")
    wire_cost = probe.get_stats()["wire_bytes"]
    cache = manager_of(store, clock, max_bytes=2 * entry_cost + wire_cost - 1)
    cache.put("a", "m", "a" * 40)
    assert await _wire_response(cache, "a") == "a" * 40
    assert cache.get_stats()["wire_bytes"] == wire_cost  # spare budget: kept
    cache.put("b", "m", "b" * 40)  # both entries fit, with the kept bytes they would not: those go
    stats = cache.get_stats()
    assert (stats["entries"], stats["evictions"], stats["wire_bytes"]) == (2, 0, 0)
    assert await _wire_response(cache, "b") == "b" * 40  # no room to keep it, answered all the same
    assert cache.get_stats()["wire_bytes"] == 0
    assert stats["bytes"] + stats["wire_bytes"] <= cache.max_bytes
