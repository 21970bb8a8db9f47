"""Faults without loss, in one process over real gRPC (issue 12): acknowledged writes (W),
tombstones, anti-entropy and hinted handoff. The process-level versions are the nemesis
tests (``tests/lan/test_nemesis.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from llmlab_grpc.cache.entry import CacheEntry
from llmlab_grpc.cache.keys import cache_key
from llmlab_grpc.replication.digest import BUCKETS, Digester, Item, bucket_of
from llmlab_grpc.replication.placement import place
from llmlab_grpc.replication.tombstones import Tombstone, Tombstones
from tests.test_replication_unit import MODEL, Mesh, _until


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    nodes = Mesh()
    yield nodes
    await nodes.close()


def isolate(mesh: Mesh, node_id: str) -> None:
    """Cut ``node_id`` off both ways, as a partition seen by peer timeouts would."""
    for node in mesh.nodes.values():
        if node.node_id == node_id:
            for other in list(mesh.nodes):
                node.peers.remove(other)
        else:
            node.peers.remove(node_id)


async def replicated_on_three(mesh: Mesh, prompt: str, response: str) -> CacheEntry:
    """n1, n2, n3 connected, and an entry put on n1 held by all three."""
    for name in ("n1", "n2", "n3"):
        await mesh.add(name)
    mesh.connect()
    entry = mesh.nodes["n1"].manager.put(prompt, MODEL, response)
    await _until(lambda: mesh.holders(entry.key) == {"n1", "n2", "n3"}, "replication")
    return entry


# -- W: acknowledged writes ---------------------------------------------------------------------


async def test_a_put_returns_after_w_verified_copies(mesh: Mesh) -> None:
    for name in ("n1", "n2", "n3"):
        await mesh.add(name)
    mesh.connect()
    n1 = mesh.nodes["n1"]
    n1.replicator.write_acks = 2
    entry = n1.manager.put("durable?", MODEL, "yes")
    copies, w = await n1.replicator.replicate_acked(entry, timeout_s=5)
    assert w == 2 and copies >= 2
    assert len(mesh.holders(entry.key)) >= 2
    everywhere = n1.manager.put("everywhere?", MODEL, "yes")
    assert await n1.replicator.replicate_acked(everywhere, timeout_s=5, wanted=0) == (3, 3)  # all = N+1
    assert mesh.holders(everywhere.key) == {"n1", "n2", "n3"}


async def test_a_put_short_of_w_returns_at_its_deadline_with_what_it_has(mesh: Mesh) -> None:
    n1 = await mesh.add("n1")
    alone = n1.manager.put("alone", MODEL, "one copy")
    assert await n1.replicator.replicate_acked(alone, timeout_s=5, wanted=2) == (1, 2)  # no peer: at once
    n2 = await mesh.add("n2")
    mesh.connect()
    await n2.server.stop(None)  # in the table, but every call to it fails
    entry = n1.manager.put("short", MODEL, "one copy")
    copies, w = await n1.replicator.replicate_acked(entry, timeout_s=2, wanted=2)
    assert (copies, w) == (1, 2)
    assert n1.replicator.shortfall() == 2  # both stay short, not abandoned: the retry has them


# -- tombstones ------------------------------------------------------------------------------------


def test_tombstones_kill_older_copies_and_expire_with_the_entry() -> None:
    stones = Tombstones(max_count=2)
    key = cache_key("q", MODEL)
    assert stones.add(Tombstone(key, deleted_unix_ms=100, expires_unix_ms=1000), now_ms=50)
    stone = stones.get(key, 60)
    assert stone is not None and stone.kills(100) and not stone.kills(101)
    assert not stones.add(Tombstone(key, 90, 1000), now_ms=60), "an older delete does not replace a newer one"
    assert not stones.add(Tombstone("b" * 64, 10, 40), now_ms=50), "an expired tombstone is not kept"
    stones.add(Tombstone("c" * 64, 200, 2000), 60)
    stones.add(Tombstone("d" * 64, 300, 2000), 60)
    assert len(stones) == 2 and key not in stones, "beyond the cap the oldest delete goes"
    assert stones.sweep(2000) == 2 and len(stones) == 0


async def test_a_delete_missed_by_a_partitioned_replica_is_not_resurrected(mesh: Mesh) -> None:
    entry = await replicated_on_three(mesh, "forget me", "gone soon")
    n1, n3 = mesh.nodes["n1"], mesh.nodes["n3"]
    isolate(mesh, "n3")
    assert n1.manager.delete(entry.key)
    await _until(lambda: mesh.holders(entry.key) == {"n3"}, "the delete on the reachable side")
    assert n1.replicator.tombstones.get(entry.key, n1.replicator.now_ms()) is not None
    mesh.connect()  # heal: joins on both sides run anti-entropy rounds
    await _until(lambda: mesh.holders(entry.key) == set(), "the stale copy to be buried")
    assert n3.replicator.tombstones.get(entry.key, n3.replicator.now_ms()) is not None
    # A write after the delete is a new answer and lives.
    mesh.clock.advance(1)
    again = n1.manager.put("forget me", MODEL, "back, newer")
    await _until(lambda: mesh.holders(again.key) == {"n1", "n2", "n3"}, "the newer put everywhere")


# -- anti-entropy ----------------------------------------------------------------------------------


def test_in_sync_nodes_hash_the_same_buckets_and_a_difference_shows_in_one() -> None:
    members = ["a", "b", "c"]
    keys = [cache_key(f"q{i}", MODEL) for i in range(200)]
    items = [Item(k, 10_000, 5, False, "x") for k in keys]
    a, b = Digester("a", members, 3), Digester("b", members, 3)
    assert a.buckets(items, ["b"])["b"] == b.buckets(items, ["a"])["a"]
    changed = [Item(keys[0], 10_000, 6, False, "y"), *items[1:]]
    ours, theirs = a.buckets(items, ["b"])["b"], b.buckets(changed, ["a"])["a"]
    assert [i for i in range(BUCKETS) if ours[i] != theirs[i]] == [bucket_of(keys[0])]


async def test_anti_entropy_moves_only_the_differences_and_never_an_expired_entry(mesh: Mesh) -> None:
    n1, n2 = await mesh.add("n1", replicas=1), await mesh.add("n2", replicas=1)
    mesh.connect()
    keys = [n1.manager.put(f"q{i}", MODEL, f"a{i}").key for i in range(50)]
    await _until(lambda: all(mesh.holders(k) == {"n1", "n2"} for k in keys), "replication")
    ae = n1.replicator.anti_entropy
    before = dict(ae.counters)
    assert await ae.run_round() == 0
    assert ae.counters["differing_buckets"] == before["differing_buckets"], "in sync: nothing differs"
    assert ae.counters["digest_bytes"] - before["digest_bytes"] < 4 * 1024, "in sync: a digest of a few KB"

    # n2 loses two copies behind everyone's back (a restart with an empty cache would).
    n2.manager.delete(keys[0], reason="lost")
    n2.manager.delete(keys[1], reason="lost")
    short = n2.manager.put_entry(n1.manager.get_entry(keys[2]))  # type: ignore[arg-type]
    assert short is not None
    assert await ae.run_round() == 2, "exactly the two missing entries move"
    assert all(n2.manager.get_entry(k) is not None for k in keys[:2])

    # An entry that expires is not brought back by anyone.
    brief = n1.manager.put("brief", MODEL, "soon gone", ttl=10)
    await _until(lambda: n2.manager.get_entry(brief.key) is not None, "the brief entry's copy")
    n2.manager.delete(brief.key, reason="lost")
    mesh.clock.advance(11)
    assert await ae.run_round() == 0
    assert mesh.holders(brief.key) == set()


# -- hinted handoff --------------------------------------------------------------------------------


async def test_a_write_for_a_dead_replica_goes_to_a_stand_in_and_moves_home(mesh: Mesh) -> None:
    for name in ("n1", "n2", "n3", "n4"):
        await mesh.add(name)
    mesh.connect()
    n1 = mesh.nodes["n1"]
    # A question whose placement from n1 includes n4.
    prompt = next(p for p in (f"hint {i}" for i in range(100))
                  if "n4" in place(cache_key(p, MODEL), ["n2", "n3", "n4"], 2))
    isolate(mesh, "n4")
    entry = n1.manager.put(prompt, MODEL, "held for n4")
    stand_in = next(n for n in ("n2", "n3") if n not in place(entry.key, ["n2", "n3", "n4"], 2))
    await _until(lambda: mesh.holders(entry.key) == {"n1", "n2", "n3"}, "the copies, one on the stand-in")
    assert mesh.nodes[stand_in].replicator.stats()["hints"] == 1
    # n1 counts the hint when the stand-in's acknowledgement reaches it, a moment after the copy is held
    await _until(lambda: n1.replicator.counters["hinted"] >= 1, "n1 to count the hinted write")
    assert n1.replicator.counters["hinted"] == 1
    mesh.connect()  # n4 is back
    await _until(lambda: "n4" in mesh.holders(entry.key) and stand_in not in mesh.holders(entry.key),
                 "the hinted copy to move home and leave the stand-in")
    assert mesh.nodes[stand_in].replicator.counters["handed_off"] == 1
    assert mesh.holders(entry.key) == {"n1", "n2", "n3", "n4"} - {stand_in}
    for node in mesh.nodes.values():  # anti-entropy agrees: N+1 copies, the stand-in not among them
        await node.replicator.anti_entropy.run_round()
    assert mesh.holders(entry.key) == {"n1", "n2", "n3", "n4"} - {stand_in}


async def test_a_delete_through_a_node_without_the_entry_still_buries_every_copy(mesh: Mesh) -> None:
    entry = await replicated_on_three(mesh, "delete me from afar", "soon gone")
    n3 = mesh.nodes["n3"]
    n3.manager.delete(entry.key, reason="lost")  # n3 lacks it (an empty cache after a restart, say)
    mesh.clock.advance(1)
    n3.replicator.bury(entry.key)  # what Cache.Delete on n3 does for a key n3 does not hold
    await _until(lambda: mesh.holders(entry.key) == set(), "every copy to be buried")
