"""The Cache gRPC service in-process: answers, validation and status codes."""

from __future__ import annotations

from array import array
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from llmlab_grpc.cache import CacheEntry, CacheManager
from llmlab_grpc.cache.errors import StoreUnavailable
from llmlab_grpc.cache.manager import EntryExtras
from llmlab_grpc.cache.service import CacheService, add_to_server
from llmlab_grpc.cache.stores import MemoryStore
from llmlab_grpc.cache.wire import varint
from llmlab_grpc.proto.llmlab.v1 import cache_pb2, cache_pb2_grpc, common_pb2

LIMIT = 64


class Served:
    def __init__(self, service: CacheService, stub: cache_pb2_grpc.CacheStub) -> None:
        self.service = service
        self.manager = service.manager
        self.stub = stub


@pytest.fixture(params=["wire", "message"])
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """The service as a node serves it (``Get`` as bytes: ``add_to_server``) and as generated."""
    service = CacheService(CacheManager(MemoryStore(), max_value_bytes=LIMIT, node_id="n1"), "n1")
    server = grpc.aio.server()
    add = add_to_server if request.param == "wire" else cache_pb2_grpc.add_CacheServicer_to_server
    add(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Served(service, cache_pb2_grpc.CacheStub(channel))
    await server.stop(None)


def lookup(prompt: str = "Tell me a joke", model: str = "smollm2", **params: Any) -> cache_pb2.CacheLookup:
    return cache_pb2.CacheLookup(prompt=prompt, model=model, params=common_pb2.GenerationParams(**params))


async def expect_code(call: Any, code: grpc.StatusCode, match: str = "") -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value.details()
    assert match in (err.value.details() or "")
    return err.value.details() or ""


async def test_put_then_get_by_lookup_and_by_key(served: Served) -> None:
    put = await served.stub.Put(cache_pb2.PutRequest(lookup=lookup(temperature=0), response="knock knock"))
    assert put.entry.primary_node_id == "n1" and put.entry.response == "knock knock"
    by_lookup = await served.stub.Get(cache_pb2.GetRequest(lookup=lookup(temperature=0)))
    assert by_lookup.found and by_lookup.entry.response == "knock knock" and by_lookup.source_node_id == "n1"
    by_key = await served.stub.Get(cache_pb2.GetRequest(key=put.key))
    assert by_key.found and by_key.entry.key == put.key and by_key.entry.hits == 2
    miss = await served.stub.Get(cache_pb2.GetRequest(lookup=lookup(temperature=1)))
    assert not miss.found
    stats = (await served.stub.Stats(cache_pb2.StatsRequest())).stats
    assert (stats.hits, stats.misses, stats.puts, stats.entries, stats.store) == (2, 1, 1, 1, "memory")


async def test_put_honours_ttl_and_critical(served: Served) -> None:
    put = await served.stub.Put(cache_pb2.PutRequest(lookup=lookup(), response="r", ttl_ms=1500, critical=True))
    assert put.entry.expires_unix_ms - put.entry.created_unix_ms == 1500
    assert put.entry.critical


async def test_delete_and_clear(served: Served) -> None:
    put = await served.stub.Put(cache_pb2.PutRequest(lookup=lookup(), response="r"))
    await served.stub.Put(cache_pb2.PutRequest(lookup=lookup("other"), response="s"))
    assert (await served.stub.Delete(cache_pb2.DeleteRequest(key=put.key))).deleted
    assert not (await served.stub.Delete(cache_pb2.DeleteRequest(lookup=lookup()))).deleted
    assert (await served.stub.Clear(cache_pb2.ClearRequest())).removed == 1
    assert not (await served.stub.Get(cache_pb2.GetRequest(lookup=lookup("other")))).found


async def test_requests_naming_no_entry_are_invalid(served: Served) -> None:
    stub = served.stub
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await expect_code(stub.Get(cache_pb2.GetRequest()), invalid, "set key, or lookup")
    await expect_code(stub.Delete(cache_pb2.DeleteRequest()), invalid, "set key, or lookup")
    await expect_code(stub.Get(cache_pb2.GetRequest(key="not-a-key")), invalid, "64 lowercase hex")
    await expect_code(stub.Get(cache_pb2.GetRequest(lookup=lookup(model=""))), invalid, "model is empty")
    bad = common_pb2.GenerationParams(temperature=float("nan"))
    await expect_code(stub.Get(cache_pb2.GetRequest(lookup=cache_pb2.CacheLookup(prompt="p", model="m", params=bad))),
                      invalid, "temperature")


async def test_bad_puts_are_invalid_and_store_nothing(served: Served) -> None:
    stub = served.stub
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await expect_code(stub.Put(cache_pb2.PutRequest(response="r")), invalid, "model is empty")
    await expect_code(stub.Put(cache_pb2.PutRequest(lookup=lookup(model=""), response="r")), invalid, "model")
    await expect_code(stub.Put(cache_pb2.PutRequest(lookup=lookup(), response="r", ttl_ms=-5)), invalid, "ttl_ms")
    details = await expect_code(stub.Put(cache_pb2.PutRequest(lookup=lookup(), response="x" * (LIMIT + 1))), invalid)
    assert f"at most {LIMIT} bytes" in details and "cache_max_value_bytes" in details
    assert served.manager.get_stats()["puts"] == 0


async def test_a_failing_store_is_unavailable(served: Served) -> None:
    class DownStore(MemoryStore):
        def put(self, value: str) -> str:
            raise StoreUnavailable("Ray object store refused the value: raylet is gone")

    served.manager.store = DownStore()
    await expect_code(served.stub.Put(cache_pb2.PutRequest(lookup=lookup(), response="r")),
                      grpc.StatusCode.UNAVAILABLE, "raylet")


async def test_read_through_and_write_acks_go_through_the_attached_peer_source_only(served: Served) -> None:
    remote = CacheManager(MemoryStore(), node_id="n2").put("p", "m", "from a replica")
    asked: list[str] = []

    class Replicas:  # a cache.hooks.PeerSource, as the replica role attaches its replicator
        async def read_through(self, key: str) -> tuple[CacheEntry, str] | None:
            asked.append(key)
            return (remote, "n2") if key == remote.key else None

        async def confirm_copies(self, entry: CacheEntry, timeout_s: float) -> tuple[int, int, int]:
            return 1, 3, 2

        def bury(self, key: str) -> None:
            buried.append(key)

        def shortfall(self) -> int:
            return 7

    buried: list[str] = []
    request = cache_pb2.GetRequest(lookup=lookup("p", "m"))
    assert not (await served.stub.Get(request)).found  # no hook yet: a plain miss
    served.manager.attach_peer_source(Replicas())
    assert not (await served.stub.Get(request)).found  # hook set, but not asked for
    request.read_through = True
    reply = await served.stub.Get(request)
    assert reply.found and reply.entry.response == "from a replica" and reply.source_node_id == "n2"
    assert asked == [remote.key]
    assert served.manager.get_stats()["replication_shortfall"] == 7
    put = await served.stub.Put(cache_pb2.PutRequest(lookup=lookup("q", "m"), response="r"))
    assert (put.copies, put.copies_target) == (1, 3)
    await served.stub.Delete(cache_pb2.DeleteRequest(key=remote.key))  # not held here: the source still hears it
    assert buried == [remote.key]
    served.manager.attach_peer_source(None)
    assert not (await served.stub.Get(request)).found and served.manager.get_stats()["replication_shortfall"] == 0


# -- hostile puts (issue 16) --------------------------------------------------------------------------


async def test_nested_or_huge_tools_json_is_invalid_argument_not_unknown(served: Served) -> None:
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    nested = "[" * 50_000 + "]" * 50_000  # 100 KB: under every size limit, far over the parser's depth
    for call in (served.stub.Put(cache_pb2.PutRequest(lookup=lookup(tools_json=nested), response="r")),
                 served.stub.Get(cache_pb2.GetRequest(lookup=lookup(tools_json=nested))),
                 served.stub.Delete(cache_pb2.DeleteRequest(lookup=lookup(tools_json=nested)))):
        await expect_code(call, invalid, "nests too deeply")
    huge = '["' + "x" * (3 * 1024 * 1024) + '"]'  # the issue put 15 MB (a node now refuses it whole: limits.py)
    await expect_code(served.stub.Put(cache_pb2.PutRequest(lookup=lookup(tools_json=huge), response="r")),
                      invalid, "tools_json is longer than the limit")
    over_cap = '["' + "x" * (300 * 1024) + '"]'  # parseable, but over cache_max_params_bytes (256 KiB)
    await expect_code(served.stub.Put(cache_pb2.PutRequest(lookup=lookup(tools_json=over_cap), response="r")),
                      invalid, "cache_max_params_bytes")
    assert served.manager.get_stats()["puts"] == 0


async def test_a_ttl_of_2_to_the_62_is_capped_at_the_maximum(served: Served) -> None:
    put = await served.stub.Put(cache_pb2.PutRequest(lookup=lookup(), response="r", ttl_ms=2**62))
    max_ttl_ms = int(served.manager.max_ttl_s * 1000)
    assert put.entry.expires_unix_ms - put.entry.created_unix_ms == max_ttl_ms
    longest = await served.stub.Put(cache_pb2.PutRequest(lookup=lookup("p2"), response="r", ttl_ms=2**63 - 1))
    assert longest.entry.expires_unix_ms - longest.entry.created_unix_ms == max_ttl_ms


# -- Get as bytes (cache/wire.py) ------------------------------------------------------------------


class Aborted(Exception):
    pass


class AbortContext:
    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


async def test_a_hit_written_as_bytes_is_the_message_get_builds() -> None:
    manager = CacheManager(MemoryStore(), node_id="n1")
    service = CacheService(manager, "n1")
    extras = EntryExtras(namespace="docs", writer="alice", prompt_tokens=7, completion_tokens=300,
                         finish_reason="length", semantic_text="a joke?", context_hash="c" * 64,
                         embedding=array("f", [0.25, -1.5, 3.0]).tobytes())
    params = {"temperature": 0.0, "stop": ["\n", "END"], "tools_json": '[{"name": "calc"}]', "seed": 42,
              "system_prompt": "be brief", "max_tokens": 64}
    cases = [("Tell me a joke", "plain", None, {}),
             ("Wie geht's? \u00e9\U0001f600", "\u00fcber " * 3000, extras, params),
             ("", "x" * 20_000, None, {"temperature": 0.0})]  # an empty prompt; a 3-byte length
    for prompt, response, extra, kwargs in cases:
        entry = manager.put(prompt, "m", response, kwargs, extras=extra)
        namespace = extra.namespace if extra else ""
        request = cache_pb2.GetRequest(lookup=cache_pb2.CacheLookup(
            prompt=prompt, model="m", namespace=namespace, params=common_pb2.GenerationParams(**kwargs)))
        for round_ in range(130):  # hit counts past one varint byte
            wire = cache_pb2.GetResponse.FromString(await service.get_wire(request.SerializeToString(), AbortContext()))
            message = await service.Get(request, AbortContext())  # type: ignore[arg-type]
            assert wire.entry.hits == message.entry.hits - 1 == 2 * round_ + 1
            wire.entry.hits = message.entry.hits
            assert wire == message and wire.found and wire.entry.key == entry.key
        by_key = cache_pb2.GetRequest(key=entry.key).SerializeToString()
        reply = cache_pb2.GetResponse.FromString(await service.get_wire(by_key, AbortContext()))
        assert reply.entry.response == response
    assert manager.get_stats()["wire_bytes"] > 20_000  # kept, and counted


async def test_get_as_bytes_refuses_what_is_not_a_get_request() -> None:
    service = CacheService(CacheManager(MemoryStore(), node_id="n1"), "n1")
    for raw in (b"\xff\xff\xff", cache_pb2.GetRequest(max_age_ms=-1, key="a" * 64).SerializeToString()):
        with pytest.raises(Aborted) as err:
            await service.get_wire(raw, AbortContext())
        assert err.value.args[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a GetRequest" in str((await _aborted(service, b"\xff")).args[1])


async def _aborted(service: CacheService, raw: bytes) -> Aborted:
    try:
        await service.get_wire(raw, AbortContext())
    except Aborted as exc:
        return exc
    raise AssertionError("not aborted")


async def test_lookup_answer_reads_what_lookup_does_counting_each_lookup_once() -> None:
    """The planner's in-process read (``lookup_answer``) against ``lookup``: the same answer,
    usage and node, local or read through a replica, and one hit or miss counted per call."""
    now = [1_000.0]
    manager = CacheManager(MemoryStore(), node_id="n1", clock=lambda: now[0])
    service = CacheService(manager, "n1")
    here = manager.put("p", "m", "held here", extras=EntryExtras(
        namespace="team", prompt_tokens=5, completion_tokens=2, finish_reason="stop", semantic_text="p?"))
    remote = CacheManager(MemoryStore(), node_id="n2").put("q", "m", "from a replica")

    class Replicas:  # a cache.hooks.PeerSource answering one key
        async def read_through(self, key: str) -> tuple[CacheEntry, str] | None:
            return (remote, "n2") if key == remote.key else None

    manager.attach_peer_source(Replicas())  # type: ignore[arg-type]
    for key, node in ((here.key, "n1"), (remote.key, "n2")):
        reply = await service.lookup(key, read_through=True)
        answer = await service.lookup_answer(key, read_through=True)
        entry = reply.entry
        assert answer is not None and reply.found and answer.node_id == reply.source_node_id == node
        assert (answer.key, answer.prompt, answer.semantic_text, answer.namespace, answer.response) == (
            entry.key, entry.prompt, entry.semantic_text, entry.namespace, entry.response)
        assert (answer.prompt_tokens, answer.completion_tokens, answer.finish_reason) == (
            entry.usage.prompt_tokens, entry.usage.completion_tokens, entry.usage.finish_reason)
    assert await service.lookup_answer(remote.key) is None  # no read-through asked: a miss here
    now[0] += 10
    assert await service.lookup_answer(here.key, max_age_s=5) is None  # older than asked: a miss
    assert (await service.lookup_answer(here.key, max_age_s=60)) is not None
    stats = manager.get_stats()
    assert (stats["hits"], stats["misses"]) == (3, 4)  # one count per call (the replica's copies: local misses)


def test_varints_are_protobufs_own() -> None:
    for n in (0, 1, 127, 128, 300, 16_383, 16_384, 2_097_151, 2_097_152, 2**28 - 1, 2**28, 1_764_000_000,
              999_999_999, 2**35 - 1, 2**35, 2**40 + 7, 2**63 - 1):
        expected = common_pb2.CacheEntry(hits=n).SerializeToString()
        assert (b"" if n == 0 else b"\x38" + varint(n)) == expected  # field 7, varint
    with pytest.raises(ValueError):
        varint(-1)
