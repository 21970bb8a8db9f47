"""Replication without node processes: placement, the queue, copy checks, and Replicators talking
over real gRPC servers in this process (fast enough to cover the protocol's corners)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from llmlab_grpc.cache import CacheEntry, CacheManager, cache_key
from llmlab_grpc.cache.keys import checksum
from llmlab_grpc.cache.manager import EntryExtras
from llmlab_grpc.cache.semantic.index import SemanticIndex
from llmlab_grpc.cache.stores import MemoryStore
from llmlab_grpc.mesh.channels import ChannelPool
from llmlab_grpc.mesh.peers import PeerTable
from llmlab_grpc.proto.llmlab.v1 import cache_pb2, common_pb2, replica_pb2, replica_pb2_grpc
from llmlab_grpc.replication import RefusedCopy, Replicator, place, rank, verify_copy
from llmlab_grpc.replication import replicator as replicator_module
from llmlab_grpc.replication.queue import ReplicationQueue
from llmlab_grpc.replication.service import ReplicaService
from tests.cache_support import FakeClock
from tests.helpers import wait_until
from tests.test_semantic_mesh_search import near, unit

MODEL = "smollm2-135m"

# -- placement --------------------------------------------------------------------------------------


def test_rank_is_deterministic_and_ignores_input_order() -> None:
    nodes = [f"n{i}" for i in range(8)]
    key = cache_key("hello", MODEL)
    assert rank(key, nodes) == rank(key, list(reversed(nodes))) == rank(key, nodes + nodes[:3])
    assert sorted(rank(key, nodes)) == sorted(nodes)


def test_place_excludes_the_primary_and_takes_the_first_n() -> None:
    nodes = ["a", "b", "c", "d"]
    key = cache_key("q", MODEL)
    order = rank(key, nodes)
    assert place(key, nodes, 2) == order[:2]
    assert place(key, nodes, 2, exclude=[order[0]]) == order[1:3]
    assert place(key, nodes, 9) == order and place(key, nodes, 0) == []


def test_a_departure_moves_only_the_keys_the_departed_node_held() -> None:
    nodes = [f"n{i}" for i in range(6)]
    keys = [cache_key(f"prompt {i}", MODEL) for i in range(500)]
    before = {k: place(k, nodes, 2) for k in keys}
    after = {k: place(k, [n for n in nodes if n != "n3"], 2) for k in keys}
    for key in keys:
        kept = [n for n in before[key] if n != "n3"]
        assert after[key][: len(kept)] == kept  # survivors keep their copies, in the same order
        assert len(after[key]) == 2
    load = Counter(n for k in keys for n in before[k])
    assert min(load.values()) > 0.5 * max(load.values())  # spread evenly enough


# -- the queue --------------------------------------------------------------------------------------


def test_queue_serves_critical_then_hottest_first() -> None:
    queue = ReplicationQueue(10)
    queue.offer("cold", (False, 0))
    queue.offer("hot", (False, 9))
    queue.offer("critical", (True, 0))
    queue.offer("warm", (False, 3))
    assert [queue.pop_nowait() for _ in range(5)] == ["critical", "hot", "warm", "cold", None]


def test_a_full_queue_hands_back_the_least_important_key() -> None:
    queue = ReplicationQueue(2)
    assert queue.offer("a", (False, 1)) is None
    assert queue.offer("b", (False, 5)) is None
    assert queue.offer("c", (False, 0)) == "c"  # the newcomer is the least important
    assert queue.offer("d", (True, 0)) == "a"  # a critical key displaces the coldest
    assert queue.offer("b", (False, 7)) is None and len(queue) == 2  # re-offer: one entry per key
    assert [queue.pop_nowait(), queue.pop_nowait()] == ["d", "b"]


# -- copy checks ------------------------------------------------------------------------------------


def _entry(prompt: str = "Tell me a joke", response: str = "A joke.", expires: int = 2_000_000_000_000
           ) -> common_pb2.CacheEntry:
    key = cache_key(prompt, MODEL, {"seed": 42})
    return common_pb2.CacheEntry(key=key, model=MODEL, prompt=prompt, response=response, created_unix_ms=1,
                                 expires_unix_ms=expires, size_bytes=len(response), checksum=checksum(response),
                                 primary_node_id="n1", params=common_pb2.GenerationParams(seed=42))


def test_verify_copy_accepts_an_intact_copy() -> None:
    proto = _entry()
    assert verify_copy(proto, proto.key, 1000).response == "A joke."


def test_verify_copy_checks_the_namespace_in_the_key() -> None:
    proto = _entry()
    proto.namespace = "team-a"
    proto.key = cache_key(proto.prompt, MODEL, {"seed": 42}, "team-a")
    assert verify_copy(proto, proto.key, 1000).namespace == "team-a"
    proto.namespace = "team-b"  # moved into another namespace: refused
    with pytest.raises(RefusedCopy, match="another key"):
        verify_copy(proto, proto.key, 1000)


@pytest.mark.parametrize(("change", "why"), [
    (lambda e: setattr(e, "response", "A tampered joke."), "checksum"),
    (lambda e: setattr(e, "prompt", "Another prompt"), "another key"),
    (lambda e: setattr(e, "expires_unix_ms", 500), "expired"),
])
def test_verify_copy_refuses_a_bad_copy(change: Callable[[common_pb2.CacheEntry], None], why: str) -> None:
    proto = _entry()
    change(proto)
    with pytest.raises(RefusedCopy, match=why):
        verify_copy(proto, proto.key, 1000)


def test_verify_copy_refuses_the_wrong_entry() -> None:
    with pytest.raises(RefusedCopy, match="asked for"):
        verify_copy(_entry(), cache_key("other", MODEL), 1000)


# -- Replicators over real gRPC servers in this process ---------------------------------------------


class RottingStore(MemoryStore):
    """A memory store whose values rot when told to: what a flipped bit in a replica's memory looks like."""

    rotten = False

    def get(self, handle: Any) -> str:
        value = super().get(handle)
        return value + " (rotten)" if self.rotten else value


@dataclasses.dataclass
class Node:
    node_id: str
    manager: CacheManager
    replicator: Replicator
    server: grpc.aio.Server
    address: str
    peers: PeerTable
    store: RottingStore


class Mesh:
    """Nodes in this process; ``connect`` fills each peer table as heartbeats would."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.clock = FakeClock()

    async def add(self, node_id: str, replicas: int = 2, service: type[ReplicaService] = ReplicaService) -> Node:
        store = RottingStore()
        manager = CacheManager(store, node_id=node_id, clock=self.clock)
        peers = PeerTable(node_id)
        replicator = Replicator(manager, node_id, peers, ChannelPool("unit-test-secret"), replica_count=replicas,
                                retry_s=0.2, self_name=node_id, clock=lambda: int(self.clock() * 1000))
        server = grpc.aio.server()
        replica_pb2_grpc.add_ReplicaServicer_to_server(service(replicator), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        replicator.self_address = f"127.0.0.1:{port}"
        replicator.start()
        manager.attach_peer_source(replicator)  # as the replica component does (cache/hooks.py)
        node = Node(node_id, manager, replicator, server, f"127.0.0.1:{port}", peers, store)
        self.nodes[node_id] = node
        return node

    def connect(self) -> None:
        for node in self.nodes.values():
            for other in self.nodes.values():
                if other is not node and other.node_id not in node.peers:
                    node.peers.upsert(common_pb2.NodeInfo(node_id=other.node_id, name=other.node_id,
                                                          address=other.address, roles=["cache", "replica"]), "static")

    def kill(self, node_id: str) -> None:
        """Forget a node everywhere, as peer timeouts would (its server keeps running, unreachable by table)."""
        for node in self.nodes.values():
            node.peers.remove(node_id)

    def holders(self, key: str) -> set[str]:
        return {n.node_id for n in self.nodes.values() if n.manager.get_entry(key) is not None}

    async def close(self) -> None:
        for node in self.nodes.values():
            await node.replicator.stop()
            await node.server.stop(None)
            await node.replicator.channels.close()


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    mesh = Mesh()
    yield mesh
    # In a task of its own: awaited directly in pytest-asyncio's finalizer, grpc.aio's server stop
    # sometimes never completed after the forged-copy tests (seen here under load).
    await asyncio.wait_for(mesh.close(), 30)


async def _until(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    return await asyncio.to_thread(wait_until, predicate, timeout, 0.02, what)


async def test_a_put_is_replicated_to_its_placement_and_recorded(mesh: Mesh) -> None:
    for name in ("n1", "n2", "n3", "n4"):
        await mesh.add(name)
    mesh.connect()
    n1 = mesh.nodes["n1"]
    entry = n1.manager.put("What is a replica?", MODEL, "A copy.", {"temperature": 0})
    await _until(lambda: n1.replicator.shortfall() == 0, "the put to be replicated")
    expected = place(entry.key, ["n2", "n3", "n4"], 2)
    assert n1.replicator.get_replicas(entry.key) == sorted(expected)
    assert mesh.holders(entry.key) == {"n1", *expected}
    copy = mesh.nodes[expected[0]].manager.get_stats()
    assert copy["replica_entries"] == 1 and n1.manager.get_stats()["replication_shortfall"] == 0
    # replicate() directly asks for more copies and walks further down the ranking
    assert len(await n1.replicator.replicate(entry.key, entry.response, num_replicas=3)) == 3


async def test_shortfall_is_visible_and_retried_when_a_node_arrives(mesh: Mesh) -> None:
    n1 = await mesh.add("n1")
    entry = n1.manager.put("lonely", MODEL, "no peers yet")
    await _until(lambda: len(n1.replicator.queue) == 0, "the worker to try")
    assert n1.manager.get_stats()["replication_shortfall"] == 1
    await mesh.add("n2")
    await mesh.add("n3")
    mesh.connect()  # joins: the maintenance loop syncs the new nodes
    await _until(lambda: n1.replicator.shortfall() == 0, "the shortfall to be made up")
    assert mesh.holders(entry.key) == {"n1", "n2", "n3"}


async def test_read_through_refuses_a_rotten_copy_and_reads_a_good_one(mesh: Mesh) -> None:
    for name in ("n1", "n2", "n3", "reader"):
        await mesh.add(name, replicas=2)
    mesh.connect()
    n1 = mesh.nodes["n1"]
    entry = n1.manager.put("rot", MODEL, "the real answer")
    await _until(lambda: n1.replicator.shortfall() == 0, "replication")
    reader = mesh.nodes["reader"]
    reader.manager.delete(entry.key)  # the reader may have been chosen as a replica: make it miss
    holders = sorted(mesh.holders(entry.key))
    for name in holders:
        mesh.nodes[name].store.rotten = True
    assert await reader.replicator.read_through(entry.key) is None
    assert reader.replicator.counters["refused_reads"] >= 1
    assert reader.manager.get_entry(entry.key) is None  # refused copies are never stored
    mesh.nodes[holders[0]].store.rotten = False
    found = await reader.replicator.read_through(entry.key)
    assert found is not None and found[0].response == "the real answer" and found[1] == holders[0]


async def test_a_corrupted_copy_is_refused_by_store_and_sync(mesh: Mesh) -> None:
    n2 = await mesh.add("n2")
    good, bad = _entry("good"), _entry("bad")
    bad.checksum = checksum("something else")
    accepted, reason = n2.replicator.accept_copy(bad, "n9")
    assert not accepted and "checksum" in reason
    stored, rejected = n2.replicator.accept_batch([good, bad], "n9")
    assert (stored, rejected) == (1, 1)
    assert n2.manager.get_entry(good.key) is not None and n2.manager.get_entry(bad.key) is None


async def test_sync_is_resumable_in_bounded_calls_and_never_resurrects(mesh: Mesh,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replicator_module, "SYNC_CALL_MAX_ENTRIES", 7)
    monkeypatch.setattr(replicator_module, "SYNC_BATCH_ENTRIES", 3)
    n1, n2 = await mesh.add("n1", replicas=0), await mesh.add("n2", replicas=0)
    mesh.connect()
    keys = [n1.manager.put(f"q{i}", MODEL, f"a{i}", ttl=100 if i % 5 else 10).key for i in range(30)]
    mesh.clock.advance(50)  # every fifth entry has expired now
    calls = []
    original = n2.replicator.accept_batch

    def counting(protos: list[common_pb2.CacheEntry], sender: str) -> tuple[int, int]:
        calls.append(len(protos))
        return original(protos, sender)

    monkeypatch.setattr(n2.replicator, "accept_batch", counting)
    acked = await n1.replicator.sync_to_node("n2", keys)
    live = [k for i, k in enumerate(keys) if i % 5]
    assert acked == live and all(c <= 7 for c in calls) and sum(calls) == len(live)
    assert mesh.holders(keys[0]) == set()  # expired: neither sent nor stored
    expired = _entry("expired", expires=int(mesh.clock() * 1000) - 1)
    assert n2.replicator.accept_batch([expired], "n1") == (0, 1)


async def test_the_receiver_cuts_a_long_call_and_the_sender_resumes_after_last_key(
        mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    n1, n2 = await mesh.add("n1", replicas=0), await mesh.add("n2", replicas=0)
    mesh.connect()
    keys = [n1.manager.put(f"q{i}", MODEL, f"a{i}").key for i in range(20)]
    import llmlab_grpc.replication.service as service_module
    monkeypatch.setattr(service_module, "SYNC_CALL_MAX_ENTRIES", 4)  # only the receiver's bound is low
    monkeypatch.setattr(replicator_module, "SYNC_BATCH_ENTRIES", 2)
    assert await n1.replicator.sync_to_node("n2", keys) == keys
    assert all(n2.manager.get_entry(k) is not None for k in keys)


async def test_a_departed_primary_is_replaced_and_n_replicas_restored(mesh: Mesh) -> None:
    for name in ("n1", "n2", "n3", "n4"):
        await mesh.add(name)
    mesh.connect()
    n1 = mesh.nodes["n1"]
    hot = n1.manager.put("hot", MODEL, "hot answer")
    for _ in range(5):
        n1.manager.get_by_key(hot.key)
    await _until(lambda: n1.replicator.shortfall() == 0, "replication")
    mesh.kill("n1")
    successor = rank(hot.key, ["n2", "n3", "n4"])[0]

    def restored() -> bool:
        copies = [mesh.nodes[n].manager.get_entry(hot.key) for n in ("n2", "n3", "n4")]
        return all(c is not None and c.primary_node_id == successor for c in copies)

    await _until(restored, "the successor to take over and restore N replicas")
    others = sorted({"n2", "n3", "n4"} - {successor})  # copies land before the successor hears the acks
    await _until(lambda: mesh.nodes[successor].replicator.get_replicas(hot.key) == others, "the acks")
    assert mesh.nodes[successor].manager.get_stats()["replication_shortfall"] == 0


async def test_a_delete_on_the_primary_drops_the_copies(mesh: Mesh) -> None:
    for name in ("n1", "n2", "n3"):
        await mesh.add(name)
    mesh.connect()
    n1 = mesh.nodes["n1"]
    entry = n1.manager.put("forget me", MODEL, "gone soon")
    await _until(lambda: mesh.holders(entry.key) == {"n1", "n2", "n3"}, "replication")
    n1.manager.delete(entry.key)
    await _until(lambda: mesh.holders(entry.key) == set(), "the copies to be dropped")


async def test_a_copy_from_a_non_owner_never_overwrites_the_owners_version(mesh: Mesh) -> None:
    n2 = await mesh.add("n2", replicas=0)  # no replication: n2 never takes over n1's entry here
    from_owner = _entry("q", "v2")
    from_owner.created_unix_ms = 10
    assert n2.replicator.accept_copy(from_owner, "n1")[0]
    stale = _entry("q", "v1")  # an older answer, handed over by some other holder
    assert n2.replicator.accept_copy(stale, "n3")[0]
    assert n2.manager.get_entry(from_owner.key).response == "v2"  # type: ignore[union-attr]
    newer = _entry("q", "v3")
    newer.created_unix_ms = 20
    assert n2.replicator.accept_copy(newer, "n1")[0]
    assert n2.manager.get_entry(from_owner.key).response == "v3"  # type: ignore[union-attr]


async def test_the_service_validates_requests(mesh: Mesh) -> None:
    n1 = await mesh.add("n1")
    async with grpc.aio.insecure_channel(n1.address) as channel:
        stub = replica_pb2_grpc.ReplicaStub(channel)
        for call, request in [(stub.Fetch, replica_pb2.FetchRequest(key="nope")),
                              (stub.Locate, replica_pb2.LocateRequest(prompt="p")),
                              (stub.Store, replica_pb2.StoreRequest()),
                              (stub.Drop, replica_pb2.DropRequest(keys=["x"]))]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(request)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        miss = await stub.Fetch(replica_pb2.FetchRequest(key=cache_key("p", MODEL)))
        assert not miss.found


async def test_a_forged_replica_store_is_refused(mesh: Mesh) -> None:
    """Issue 16: a peer overwrote an honest replica with a self-consistent forgery (its own response,
    checksum and key, a claimed primary, expiry in the year 2200, critical). Sent over gRPC here."""
    for name in ("n1", "n2", "n3"):
        await mesh.add(name, replicas=0)
    mesh.connect()
    n2 = mesh.nodes["n2"]
    honest = _entry("What is the capital of France?", "Paris.")
    honest.created_unix_ms = int(mesh.clock() * 1000) - 1000
    honest.expires_unix_ms = int(mesh.clock() * 1000) + 60_000
    assert n2.replicator.accept_copy(honest, "n1") == (True, "")
    year_2200 = 7_258_118_400_000

    def forgery(primary: str) -> common_pb2.CacheEntry:
        fake = common_pb2.CacheEntry()
        fake.CopyFrom(honest)
        fake.response, fake.checksum = "Lyon.", checksum("Lyon.")
        fake.created_unix_ms, fake.expires_unix_ms = year_2200 - 1, year_2200
        fake.critical, fake.primary_node_id = True, primary
        return fake

    async with grpc.aio.insecure_channel(n2.address) as channel:
        stub = replica_pb2_grpc.ReplicaStub(channel)
        as_primary = await stub.Store(replica_pb2.StoreRequest(entry=forgery("n3"), sender_node_id="n3"))
        assert not as_primary.accepted and "n1 is alive" in as_primary.reason
        as_receiver = await stub.Store(replica_pb2.StoreRequest(entry=forgery("n2"), sender_node_id="n3"))
        assert not as_receiver.accepted and "naming this node its primary" in as_receiver.reason
        relayed = await stub.Store(replica_pb2.StoreRequest(entry=forgery("n1"), sender_node_id="n3"))
        assert relayed.accepted  # taken as a relay of n1's entry, which n2 already holds: ours is kept
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Store(replica_pb2.StoreRequest(entry=forgery("n3")))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The same forgery in a Sync stream, from n3's own replicator.
    assert await mesh.nodes["n3"].replicator.sync_to_node("n2", [CacheEntry.from_proto(forgery("n3"))]) == []
    kept = n2.manager.get_entry(honest.key)
    assert kept is not None and kept.response == "Paris." and kept.primary_node_id == "n1" and not kept.critical
    assert kept.expires_unix_ms == honest.expires_unix_ms

    # The honest primary's own copy is believed, but not beyond this node's clock.
    refreshed = forgery("n1")
    refreshed.response, refreshed.checksum = "Paris, France.", checksum("Paris, France.")
    assert n2.replicator.accept_copy(refreshed, "n1") == (True, "")
    kept = n2.manager.get_entry(honest.key)
    now = int(mesh.clock() * 1000)
    assert kept is not None and kept.response == "Paris, France."
    assert kept.created_unix_ms <= now and kept.expires_unix_ms <= now + int(n2.manager.max_ttl_s * 1000)


async def test_a_takeover_is_believed_only_from_the_first_of_the_ranking(mesh: Mesh) -> None:
    for name in ("n1", "n2", "n3", "n4"):
        await mesh.add(name, replicas=0)
    mesh.connect()
    entry = _entry("orphan", "kept")
    receiver = next(n for n in ("n2", "n3", "n4") if n != rank(entry.key, ["n2", "n3", "n4"])[0])
    node = mesh.nodes[receiver]
    assert node.replicator.accept_copy(entry, "n1")[0]
    mesh.kill("n1")
    first = rank(entry.key, ["n2", "n3", "n4"])[0]
    impostor = next(n for n in ("n2", "n3", "n4") if n not in (first, receiver))
    claim = common_pb2.CacheEntry()
    claim.CopyFrom(entry)
    claim.primary_node_id = impostor
    accepted, reason = node.replicator.accept_copy(claim, impostor)
    assert not accepted and f"{first} is first" in reason
    claim.primary_node_id = first
    assert node.replicator.accept_copy(claim, first) == (True, "")
    assert node.manager.get_entry(entry.key).primary_node_id == first  # type: ignore[union-attr]


async def test_two_live_claimants_of_one_answer_settle_on_the_first_of_the_pair(mesh: Mesh) -> None:
    """A paused primary back after its successor took over: each refused the other's copy for good."""
    for name in ("n2", "n3"):
        await mesh.add(name, replicas=1)
    mesh.connect()
    entry = _entry("contested", "one answer")
    winner, loser = rank(entry.key, ["n2", "n3"])
    for name in (winner, loser):
        claim = common_pb2.CacheEntry()
        claim.CopyFrom(entry)
        claim.primary_node_id = name
        mesh.nodes[name].manager.put_entry(CacheEntry.from_proto(claim), notify=False)
    claims = {name: mesh.nodes[name].manager.get_entry(entry.key).to_proto() for name in (winner, loser)}  # type: ignore[union-attr]
    accepted, reason = mesh.nodes[winner].replicator.accept_copy(claims[loser], loser)
    assert not accepted and f"its primary {winner} is alive" in reason
    assert mesh.nodes[loser].replicator.accept_copy(claims[winner], winner) == (True, "")
    assert {mesh.nodes[n].manager.get_entry(entry.key).primary_node_id for n in (winner, loser)} == {winner}  # type: ignore[union-attr]
    # Another answer from a live claimant is still refused, whatever the ranking says.
    other = common_pb2.CacheEntry()
    other.CopyFrom(claims[winner])
    other.response, other.checksum = "another answer", checksum("another answer")
    other.size_bytes = len(other.response)
    mesh.nodes[loser].manager.put_entry(CacheEntry.from_proto(claims[loser]), notify=False)
    accepted, reason = mesh.nodes[loser].replicator.accept_copy(other, winner)
    assert not accepted and "is alive" in reason


class PausedSearch(ReplicaService):
    """A node whose ``Search`` never answers (a paused process): it notes when the call is cancelled."""

    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def Search(self, request: replica_pb2.SearchRequest, context: Any) -> replica_pb2.SearchResponse:
        PausedSearch.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            PausedSearch.cancelled.set()
            raise
        raise AssertionError("unreachable")


async def test_a_semantic_search_yields_the_first_verified_match_and_cancels_a_paused_peer(
        mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replicator_module, "SEARCH_TIMEOUT_S", 60.0)  # only closing the search can end the call
    PausedSearch.started, PausedSearch.cancelled = asyncio.Event(), asyncio.Event()
    holder = await mesh.add("holder", replicas=0)
    await mesh.add("paused", replicas=0, service=PausedSearch)
    reader = await mesh.add("reader", replicas=0)
    mesh.connect()
    holder.manager.index = SemanticIndex()
    vector = unit(1)
    holder.manager.put("Who painted the Mona Lisa?", MODEL, "Leonardo da Vinci.", {"temperature": 0.0},
                       extras=EntryExtras(semantic_text="Who painted the Mona Lisa?", embedding=vector.tobytes()))
    asked = cache_pb2.CacheLookup(prompt="Who was the painter of the Mona Lisa?", model=MODEL,
                                  params=common_pb2.GenerationParams(temperature=0.0))
    request = replica_pb2.SearchRequest(lookup=asked, vector=near(vector, 0.95).tobytes(), min_similarity=0.9)
    search = reader.replicator.semantic_search(request)
    entry, node_id = await anext(search)
    assert node_id == "holder" and entry.response == "Leonardo da Vinci." and len(entry.embedding) == 384 * 4
    await asyncio.wait_for(PausedSearch.started.wait(), 10)  # it was asked too, and is still out
    await search.aclose()
    await asyncio.wait_for(PausedSearch.cancelled.wait(), 10)  # closing the search ended its call
    # a copy that fails its checks is not an answer
    holder.store.rotten = True
    found = [match async for match in reader.replicator.semantic_search(request)]
    assert found == [] and reader.replicator.counters["refused_reads"] == 1
