"""Replication across real node processes, nodes killed with SIGKILL.

The first test is the original plan's scenario in one piece: three nodes, an entry put
through the first is on exactly the two others, the first is killed, the planner of a
survivor still answers the cached question (no llm node is alive anywhere), and a
fourth node brings the entry back to a primary plus N=2 replicas.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable

import grpc
import pytest

from llmlab_grpc.cache.keys import cache_key, checksum
from llmlab_grpc.planner.planner import effective_params
from llmlab_grpc.proto.llmlab.v1 import (
    cache_pb2,
    cache_pb2_grpc,
    common_pb2,
    planner_pb2,
    planner_pb2_grpc,
    replica_pb2,
    replica_pb2_grpc,
)
from tests.cache_support import ray_session  # noqa: F401 - session fixture
from tests.helpers import NodeProcess, wait_until

MODEL = "smollm2-135m"
FLAGS = ("--no-mdns", "--cache-store", "memory", "--heartbeat-interval", "0.3", "--peer-timeout", "1.5",
         "--replication-retry", "0.5")
Factory = Callable[..., NodeProcess]


def start(node_factory: Factory, name: str, *seeds: NodeProcess, roles: str = "cache,replica") -> NodeProcess:
    peers = [arg for seed in seeds for arg in ("--peer", seed.address)]
    return node_factory(name, "--roles", roles, *FLAGS, *peers)


def wait_for_mesh(nodes: list[NodeProcess]) -> None:
    names = {n.name for n in nodes}
    wait_until(lambda: all(n.peer_names() >= names - {n.name} for n in nodes), timeout=30,
               what=f"{sorted(names)} to see each other")


def wait_gone(name: str, survivors: list[NodeProcess]) -> None:
    wait_until(lambda: all(name not in n.peer_names() for n in survivors), timeout=30,
               what=f"the survivors to drop {name}")


def holds(node: NodeProcess, key: str) -> bool:
    """Whether ``node`` has a live copy (Replica.Fetch: no hit is counted)."""
    try:
        reply = node.call(replica_pb2_grpc.ReplicaStub, "Fetch", replica_pb2.FetchRequest(key=key), timeout=5)
    except grpc.RpcError:
        return False
    return reply.found


def stats(node: NodeProcess) -> common_pb2.CacheStatistics:
    return node.call(cache_pb2_grpc.CacheStub, "Stats", cache_pb2.StatsRequest()).stats


def put(node: NodeProcess, prompt: str, response: str, params: common_pb2.GenerationParams | None = None) -> str:
    lookup = cache_pb2.CacheLookup(prompt=prompt, model=MODEL, params=params)
    return node.call(cache_pb2_grpc.CacheStub, "Put", cache_pb2.PutRequest(lookup=lookup, response=response)).key


def cli(node: NodeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMLAB_MESH_SECRET": node.secret}
    return subprocess.run([sys.executable, "-m", "llmlab_grpc", "cache", *args, "--target", node.address],
                          capture_output=True, text=True, env=env, timeout=60)


def test_the_plans_scenario_kill_the_primary_ask_a_survivor_repair_with_a_fourth_node(
        node_factory: Factory) -> None:
    roles = "cache,replica,planner"
    n1 = start(node_factory, "rep-1", roles=roles)
    n2 = start(node_factory, "rep-2", n1, roles=roles)
    n3 = start(node_factory, "rep-3", n1, roles=roles)
    wait_for_mesh([n1, n2, n3])

    # Entry A, named exactly as the planner names the question (prompt = the question, default params).
    question, answer = "Tell me a joke about copies", "Two replicas walk into a bar; the primary is already there."
    key = put(n1, question, answer, effective_params(planner_pb2.Query(text=question)))
    wait_until(lambda: holds(n2, key) and holds(n3, key), timeout=20, what="A on both other nodes")
    others = [n for n in (n2, n3) if cli(n, "get", "--key", key).stdout == answer + "\n"]
    assert len(others) == 2, "A is on exactly the two other nodes"
    located = cli(n2, "locate", "--prompt", question, "--model", MODEL, "--json")
    assert located.returncode == 0, located.stderr
    names = json.loads(located.stdout)
    assert names[0] == "rep-1" and sorted(names[1:]) == ["rep-2", "rep-3"]
    assert stats(n1).replication_shortfall == 0

    n1.stop(signal.SIGKILL)
    wait_gone("rep-1", [n2, n3])
    reply = n2.call(planner_pb2_grpc.PlannerStub, "Ask",
                    planner_pb2.AskRequest(query=planner_pb2.Query(text=question, model=MODEL)), timeout=30)
    assert reply.task.answer == answer
    assert [s.cache for s in reply.task.steps] == [planner_pb2.CACHE_OUTCOME_HIT]

    # One survivor took A over; with one other node it can hold only one replica of N=2.
    wait_until(lambda: stats(n2).replication_shortfall + stats(n3).replication_shortfall == 1, timeout=20,
               what="the takeover, short of one replica")
    n4 = start(node_factory, "rep-4", n2)
    survivors = [n2, n3, n4]

    def restored() -> list[str] | None:
        names = json.loads(cli(n4, "locate", "--key", key, "--json").stdout or "[]")
        return names if len(names) == 3 else None

    names = wait_until(restored, timeout=30, what="repair to bring A back to a primary and N=2 replicas")
    assert sorted(names) == ["rep-2", "rep-3", "rep-4"]
    assert all(holds(n, key) for n in survivors)
    wait_until(lambda: sum(stats(n).replication_shortfall for n in survivors) == 0, timeout=20,
               what="no shortfall left")


def test_200_entries_survive_the_sigkill_of_the_node_they_were_put_through(node_factory: Factory) -> None:
    n1 = start(node_factory, "bulk-1")
    rest = [start(node_factory, f"bulk-{i}", n1) for i in (2, 3, 4)]
    wait_for_mesh([n1, *rest])
    entries = {put(n1, f"question {i}", f"answer {i}"): f"answer {i}" for i in range(200)}
    wait_until(lambda: stats(n1).replication_shortfall == 0, timeout=30, what="all 200 entries replicated")

    n1.stop(signal.SIGKILL)
    wait_gone("bulk-1", rest)
    reader = rest[0]
    readable = 0
    with reader.channel() as channel:
        stub = cache_pb2_grpc.CacheStub(channel)
        for key, answer in entries.items():
            reply = stub.Get(cache_pb2.GetRequest(key=key, read_through=True), metadata=[
                ("authorization", f"Bearer {reader.secret}")], timeout=10)
            readable += reply.found and reply.entry.response == answer
    assert readable == 200, f"{200 - readable} entries lost"

    def copies_restored() -> bool:  # repair: every entry back on a primary + 2 replicas = all 3 survivors
        return all(stats(n).entries == 200 for n in rest)

    wait_until(copies_restored, timeout=60, what="repair to restore every entry's copies")
    assert sum(stats(n).replication_shortfall for n in rest) == 0


def test_a_returning_node_is_synced_with_what_it_should_hold(node_factory: Factory) -> None:
    n1 = start(node_factory, "back-1")
    n2 = start(node_factory, "back-2", n1)
    n3 = start(node_factory, "back-3", n1)
    wait_for_mesh([n1, n2, n3])
    n3.stop(signal.SIGKILL)
    wait_gone("back-3", [n1, n2])

    keys = [put(n1, f"while away {i}", f"answer {i}") for i in range(30)]
    wait_until(lambda: all(holds(n2, k) for k in keys), timeout=20, what="the entries on the one other node")
    wait_until(lambda: stats(n1).replication_shortfall == 30, timeout=10, what="the shortfall to show")

    n3 = start(node_factory, "back-3", n1)  # the same node comes back (same name, so the same node id)
    wait_until(lambda: all(holds(n3, k) for k in keys), timeout=30, what="the returning node to be synced")
    assert stats(n3).replica_entries == 30
    wait_until(lambda: stats(n1).replication_shortfall == 0, timeout=20, what="the shortfall to clear")


def test_a_corrupted_copy_is_refused_and_not_stored(node_factory: Factory) -> None:
    node = start(node_factory, "guard")
    prompt, response = "Is this intact?", "Yes."
    key = cache_key(prompt, MODEL)
    entry = common_pb2.CacheEntry(key=key, model=MODEL, prompt=prompt, response=response,
                                  created_unix_ms=1, expires_unix_ms=4_000_000_000_000, size_bytes=4,
                                  checksum=checksum("No."), primary_node_id="elsewhere")
    reply = node.call(replica_pb2_grpc.ReplicaStub, "Store",
                      replica_pb2.StoreRequest(entry=entry, sender_node_id="elsewhere"))
    assert not reply.accepted and "checksum" in reply.reason
    assert not holds(node, key)

    intact = common_pb2.CacheEntry()
    intact.CopyFrom(entry)
    intact.checksum = checksum(response)
    other = common_pb2.CacheEntry()
    other.CopyFrom(entry)
    other.prompt = "tampered prompt"  # the key no longer matches its content
    synced = node.call(replica_pb2_grpc.ReplicaStub, "Sync",
                       iter([replica_pb2.SyncRequest(sender_node_id="elsewhere", entries=[intact, other])]))
    assert (synced.stored, synced.rejected) == (1, 1)
    assert holds(node, key) and stats(node).replica_entries == 1


def test_copies_in_rays_object_store_outlive_the_primary_process(node_factory: Factory,
                                                                 request: pytest.FixtureRequest) -> None:
    """With the ``ray`` store, each copy is a Ray object owned by the node that keeps it, so the
    SIGKILL of the primary (and of the objects it owned) leaves the replica's copy readable."""
    runtime = request.getfixturevalue("ray_session").get_runtime_context()
    ray = ["--cache-store", "ray", "--ray-address", runtime.gcs_address]
    n1 = node_factory("ray-1", "--roles", "cache,replica", *FLAGS, *ray)
    n2 = node_factory("ray-2", "--roles", "cache,replica", *FLAGS, *ray, "--peer", n1.address)
    wait_for_mesh([n1, n2])
    key = put(n1, "Where do copies live?", "In the object store of the node that keeps them.")
    wait_until(lambda: holds(n2, key), timeout=20, what="the copy on ray-2")
    assert stats(n2).store == "ray" and stats(n2).replica_entries == 1
    n1.stop(signal.SIGKILL)
    wait_gone("ray-1", [n2])
    reply = n2.call(cache_pb2_grpc.CacheStub, "Get", cache_pb2.GetRequest(key=key))
    assert reply.found and reply.entry.response == "In the object store of the node that keeps them."
