"""The cache across node processes: the CLI reads and fills a node's cache over gRPC, and
every node's cache statistics reach its peers through heartbeats."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from llmlab_grpc.cache import cache_key
from llmlab_grpc.cache.entry import stored_bytes
from llmlab_grpc.proto.llmlab.v1 import cache_pb2, cache_pb2_grpc, common_pb2, node_pb2, node_pb2_grpc
from tests.cache_support import ray_session  # noqa: F401 - session fixture
from tests.helpers import NodeProcess, wait_until

PROMPT, MODEL = "Tell me a joke", "smollm2-135m"


def cli(node: NodeProcess, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMLAB_MESH_SECRET": node.secret}
    return subprocess.run([sys.executable, "-m", "llmlab_grpc", "cache", *args, "--target", node.address],
                          capture_output=True, text=True, env=env, input=stdin, timeout=60)


def peer_stats(observer: NodeProcess, name: str) -> common_pb2.CacheStatistics | None:
    try:
        reply = observer.call(node_pb2_grpc.NodeStub, "ListPeers", node_pb2.ListPeersRequest(), timeout=2.0)
    except grpc.RpcError:
        return None
    return next((p.cache_stats for p in reply.peers if p.info.name == name), None)


@pytest.fixture
def two_caches(node_factory: Callable[..., NodeProcess], request: pytest.FixtureRequest
               ) -> tuple[NodeProcess, NodeProcess]:
    """``mem``: memory store; ``obj``: Ray store, joining this test session's Ray as a driver."""
    ray = request.getfixturevalue("ray_session")
    mem = node_factory("cache-mem", "--roles", "cache", "--no-mdns", "--cache-store", "memory",
                       "--cache-max-value-bytes", "1000", "--heartbeat-interval", "0.3")
    obj = node_factory("cache-obj", "--roles", "cache", "--no-mdns", "--cache-store", "ray",
                       "--ray-address", ray.get_runtime_context().gcs_address,
                       "--heartbeat-interval", "0.3", "--peer", mem.address)
    wait_until(lambda: "cache-obj" in mem.peer_names() and "cache-mem" in obj.peer_names(), timeout=20,
               what="the two cache nodes to see each other")
    return mem, obj


def test_cli_fills_and_reads_a_remote_cache(two_caches: tuple[NodeProcess, NodeProcess]) -> None:
    mem, _ = two_caches
    put = cli(mem, "put", "--prompt", PROMPT, "--model", MODEL, "--param", "temperature=0",
              "--response", "Why did the scarecrow win an award? He was outstanding in his field.")
    assert put.returncode == 0, put.stderr
    assert put.stdout.strip() == cache_key(PROMPT, MODEL, {"temperature": 0})

    got = cli(mem, "get", "--prompt", PROMPT, "--model", MODEL, "--param", "temperature=0.0")
    assert got.returncode == 0, got.stderr
    assert got.stdout == "Why did the scarecrow win an award? He was outstanding in his field.\n"

    as_json = cli(mem, "get", "--key", put.stdout.strip(), "--json")
    body = json.loads(as_json.stdout)
    assert body["found"] and body["source_node_id"] == "cache-mem"
    assert body["entry"]["params"] == {"temperature": 0.0} and body["entry"]["hits"] == 2

    miss = cli(mem, "get", "--prompt", PROMPT, "--model", MODEL)  # no temperature: another key
    assert miss.returncode == 1 and "miss" in miss.stderr

    stats = json.loads(cli(mem, "stats", "--json").stdout)
    assert (stats["hits"], stats["misses"], stats["puts"], stats["entries"], stats["store"]) == (2, 1, 1, 1, "memory")


def test_cli_reports_invalid_requests(two_caches: tuple[NodeProcess, NodeProcess]) -> None:
    mem, _ = two_caches
    big = cli(mem, "put", "--prompt", "p", "--model", MODEL, "--response", "-", stdin="x" * 1001)
    assert big.returncode == 1
    assert "INVALID_ARGUMENT" in big.stderr and "at most 1000 bytes" in big.stderr
    empty_model = cli(mem, "put", "--prompt", "p", "--model", "", "--response", "r")
    assert empty_model.returncode == 2 and "--model" in empty_model.stderr
    bad_param = cli(mem, "get", "--prompt", "p", "--model", MODEL, "--param", "temprature=1")
    assert bad_param.returncode == 2 and "temperature" in bad_param.stderr
    bad_key = cli(mem, "get", "--key", "abc")
    assert bad_key.returncode == 1 and "INVALID_ARGUMENT" in bad_key.stderr


def test_ray_store_node_serves_its_cache(two_caches: tuple[NodeProcess, NodeProcess]) -> None:
    mem, obj = two_caches
    lookup = cache_pb2.CacheLookup(prompt=PROMPT, model=MODEL)
    assert not obj.call(cache_pb2_grpc.CacheStub, "Get", cache_pb2.GetRequest(lookup=lookup)).found
    obj.call(cache_pb2_grpc.CacheStub, "Put", cache_pb2.PutRequest(lookup=lookup, response="in the object store"))
    reply = obj.call(cache_pb2_grpc.CacheStub, "Get", cache_pb2.GetRequest(lookup=lookup))
    assert reply.found and reply.entry.response == "in the object store" and reply.source_node_id == "cache-obj"
    assert not mem.call(cache_pb2_grpc.CacheStub, "Get", cache_pb2.GetRequest(lookup=lookup)).found  # own caches
    stats = obj.call(cache_pb2_grpc.CacheStub, "Stats", cache_pb2.StatsRequest()).stats
    assert (stats.store, stats.entries, stats.hits, stats.misses) == ("ray", 1, 1, 1)


def test_cache_stats_travel_in_heartbeats(two_caches: tuple[NodeProcess, NodeProcess]) -> None:
    mem, obj = two_caches
    lookup = cache_pb2.CacheLookup(prompt=PROMPT, model=MODEL)
    for i in range(3):
        mem.call(cache_pb2_grpc.CacheStub, "Put", cache_pb2.PutRequest(lookup=lookup, response=f"answer {i}"))
        obj.call(cache_pb2_grpc.CacheStub, "Put",
                 cache_pb2.PutRequest(lookup=cache_pb2.CacheLookup(prompt=f"q{i}", model=MODEL), response="ok"))
    mem.call(cache_pb2_grpc.CacheStub, "Get", cache_pb2.GetRequest(lookup=lookup))

    def seen(observer: NodeProcess, name: str, want: dict[str, Any]) -> bool:
        stats = peer_stats(observer, name)
        return stats is not None and all(getattr(stats, k) == v for k, v in want.items())

    cost = stored_bytes(cache_key(PROMPT, MODEL), PROMPT, MODEL, {}, "answer 2")  # every stored byte counts
    want_mem = {"store": "memory", "puts": 3, "entries": 1, "hits": 1, "bytes": cost}
    wait_until(lambda: seen(obj, "cache-mem", want_mem), timeout=15, what="cache-mem's stats in cache-obj's peers")
    wait_until(lambda: seen(mem, "cache-obj", {"store": "ray", "puts": 3, "entries": 3}), timeout=15,
               what="cache-obj's stats in cache-mem's peer table")
    info = mem.call(node_pb2_grpc.NodeStub, "GetInfo", node_pb2.GetInfoRequest())
    assert info.cache_stats.store == "memory" and info.cache_stats.max_bytes == 256 * 1024 * 1024


def test_a_ray_node_still_stops_gracefully(two_caches: tuple[NodeProcess, NodeProcess]) -> None:
    """ray.init installs a SIGTERM handler that exits at once; ensure_ray puts the node's back."""
    _, obj = two_caches
    assert obj.stop(signal.SIGTERM, timeout=30) == 0
