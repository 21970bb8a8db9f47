"""Prometheus metrics: per-method call series, the collectors, ``/metrics``, ``Node.GetMetrics``, ``llmlab metrics``.

The unit tests drive a real grpc.aio server on loopback and real ``CacheManager``s; the
integration tests start node processes: a light cache node (always) and a planner+llm+
cache+bridge node with the embedded model (``llm`` mark) that is asked one question and
then scraped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmlab_grpc.cache import CacheManager
from llmlab_grpc.cache.manager import EntryExtras
from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.mesh.method_table import MethodTable
from llmlab_grpc.metrics import NodeMetrics, instrument
from llmlab_grpc.metrics.collectors import CacheCollector, NodeCollector
from llmlab_grpc.proto.llmlab.v1 import cache_pb2, cache_pb2_grpc, common_pb2, node_pb2, node_pb2_grpc
from tests.bridge_support import http_url

MODEL = "smollm2-135m"


def value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of the sample ``name{labels}`` in an exposition, or None when absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return float(sample.value)
    return None


# -- calls counted by the node's method table, on a real server --------------------------------------------------------

@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[NodeMetrics, str]]:
    metrics = NodeMetrics()

    async def ok(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no")
        return b""

    async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        for i in range(3):
            yield bytes([i])

    table = MethodTable("s3cret", instrument(metrics))
    table.add("/t.Echo/Ok", grpc.unary_unary_rpc_method_handler(ok))
    table.add("/t.Echo/Refuse", grpc.unary_unary_rpc_method_handler(refuse))
    table.add("/t.Echo/Stream", grpc.unary_stream_rpc_method_handler(stream))
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((table,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield metrics, f"127.0.0.1:{port}"
    await server.stop(None)


async def test_each_method_is_counted_by_final_code(echo_server: tuple[NodeMetrics, str]) -> None:
    metrics, address = echo_server
    auth = bearer("s3cret")
    async with grpc.aio.insecure_channel(address) as channel:
        for _ in range(3):
            assert await channel.unary_unary("/t.Echo/Ok")(b"x", metadata=auth) == b"x"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await channel.unary_unary("/t.Echo/Refuse")(b"x", metadata=auth)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [m async for m in channel.unary_stream("/t.Echo/Stream")(b"", metadata=auth)] == [b"\0", b"\1", b"\2"]
        with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
            await channel.unary_unary("/t.Echo/Ok")(b"x")
        assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await channel.unary_unary("/t.Echo/Invented")(b"x", metadata=auth)
        assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
    text = metrics.exposition().decode()
    calls = "llmlab_grpc_requests_total"
    assert value(text, calls, {"service": "t.Echo", "method": "Ok", "code": "OK"}) == 3
    assert value(text, calls, {"service": "t.Echo", "method": "Ok", "code": "UNAUTHENTICATED"}) == 1
    assert value(text, calls, {"service": "t.Echo", "method": "Refuse", "code": "INVALID_ARGUMENT"}) == 1
    assert value(text, calls, {"service": "t.Echo", "method": "Stream", "code": "OK"}) == 1
    assert value(text, "llmlab_grpc_request_duration_seconds_count", {"service": "t.Echo", "method": "Ok"}) == 4
    assert "Invented" not in text  # a made-up method name never becomes a series


def test_each_node_has_its_own_registry() -> None:
    one, two = NodeMetrics(), NodeMetrics()
    one.generation_done(MODEL, prompt_tokens=5, completion_tokens=11, seconds=0.5, decode_seconds=0.25)
    assert value(one.exposition().decode(), "llmlab_tokens_generated_total", {"model": MODEL}) == 11
    assert value(two.exposition().decode(), "llmlab_tokens_generated_total", {"model": MODEL}) is None
    assert one.tokens_per_second() == pytest.approx(40.0)  # (11 - 1) tokens over 0.25 s of decoding
    assert two.tokens_per_second() == 0.0


def test_speed_is_smoothed_and_incomplete_generations_add_no_tokens() -> None:
    metrics = NodeMetrics()
    metrics.generation_done(MODEL, 1, 11, 1.0, 1.0)  # 10 tok/s
    metrics.generation_done(MODEL, 1, 21, 1.0, 1.0)  # 20 tok/s
    assert metrics.tokens_per_second([MODEL]) == pytest.approx(0.3 * 20 + 0.7 * 10)
    metrics.generation_done(MODEL, 0, 0, 0.2, 0.0, outcome="incomplete")
    text = metrics.exposition().decode()
    assert value(text, "llmlab_tokens_generated_total", {"model": MODEL}) == 32
    assert value(text, "llmlab_generations_total", {"model": MODEL, "outcome": "incomplete"}) == 1


def test_cache_figures_by_namespace() -> None:
    metrics = NodeMetrics()
    cache = CacheManager(max_entries=2)
    metrics.add(CacheCollector.of(cache))
    team = EntryExtras(namespace="team")
    cache.put("a", MODEL, "first answer")
    cache.put("t", MODEL, "team answer", extras=team)
    assert cache.get("a", MODEL) == "first answer"
    assert cache.get("t", MODEL, namespace="team") == "team answer"
    assert cache.get("b", MODEL) is None
    assert cache.get("u", MODEL, namespace="team") is None
    cache.put("b", MODEL, "second")  # the entry cap is 2: "a", least recently used, is evicted
    text = metrics.exposition().decode()
    default, ns = {"namespace": ""}, {"namespace": "team"}
    assert value(text, "llmlab_cache_hits_total", default) == 1
    assert value(text, "llmlab_cache_hits_total", ns) == 1
    assert value(text, "llmlab_cache_misses_total", default) == 1
    assert value(text, "llmlab_cache_misses_total", ns) == 1
    assert value(text, "llmlab_cache_evictions_total", default) == 1
    assert value(text, "llmlab_cache_evictions_total", ns) == 0
    stored = {m.namespace: m.stored_bytes for m in cache.describe()}  # every stored byte, not only the answer's
    assert value(text, "llmlab_cache_bytes", default) == stored[""] > len("second")
    assert value(text, "llmlab_cache_bytes", ns) == stored["team"] > len("team answer")
    assert value(text, "llmlab_cache_entries", ns) == 1
    cache.clear()
    assert value(metrics.exposition().decode(), "llmlab_cache_entries", ns) == 0


def test_namespace_series_are_bounded() -> None:
    cache = CacheManager()
    for i in range(100):
        cache.get("p", MODEL, namespace=f"ns{i}")
    rows = cache.stats_by_namespace()
    assert len(rows) == 64 + 1  # "" and 63 others of their own, then one row for all the rest
    assert rows["_other"]["misses"] == 100 - 63


def test_peers_by_state_lists_every_state() -> None:
    metrics = NodeMetrics()
    peers = [common_pb2.Peer(state=common_pb2.PEER_STATE_ALIVE), common_pb2.Peer(state=common_pb2.PEER_STATE_ALIVE),
             common_pb2.Peer(state=common_pb2.PEER_STATE_SUSPECT)]
    metrics.add(NodeCollector(lambda: common_pb2.NodeInfo(node_id="n1", name="n1", roles=["cache"]),
                              lambda: common_pb2.NodeLoad(in_flight=2), lambda: peers))
    text = metrics.exposition().decode()
    assert value(text, "llmlab_peers", {"state": "alive"}) == 2
    assert value(text, "llmlab_peers", {"state": "suspect"}) == 1
    assert value(text, "llmlab_peers", {"state": "gone"}) == 0
    assert value(text, "llmlab_peers", {"state": "one_way"}) == 0
    assert value(text, "llmlab_load_in_flight") == 2
    assert value(text, "llmlab_node_info", {"node_id": "n1", "roles": "cache"}) == 1


# -- node processes -------------------------------------------------------------------------------

def test_any_node_serves_its_metrics_over_grpc_and_the_cli(node_factory, secret: str) -> None:  # type: ignore[no-untyped-def]
    node = node_factory("m-cache", "--roles", "cache", "--no-mdns")
    lookup = cache_pb2.CacheLookup(prompt="p", model=MODEL)
    assert not node.call(cache_pb2_grpc.CacheStub, "Get", cache_pb2.GetRequest(lookup=lookup)).found
    reply = node.call(node_pb2_grpc.NodeStub, "GetMetrics", node_pb2.GetMetricsRequest())
    assert reply.node_id == "m-cache"
    assert value(reply.text, "llmlab_grpc_requests_total",
                 {"service": "llmlab.v1.Cache", "method": "Get", "code": "OK"}) == 1
    assert value(reply.text, "llmlab_cache_misses_total", {"namespace": ""}) == 1
    cli = subprocess.run([sys.executable, "-m", "llmlab_grpc", "metrics", "--target", node.address, "--grep", "misses"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "LLMLAB_MESH_SECRET": secret})
    assert cli.returncode == 0, cli.stderr
    assert 'llmlab_cache_misses_total{namespace=""} 1.0' in cli.stdout
    assert "llmlab_peers" not in cli.stdout  # --grep kept only the matching lines


def scrape(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["content-type"].startswith("text/plain")
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.mark.llm
def test_metrics_endpoint_shows_the_ask_its_cache_miss_and_its_tokens(node_factory, secret: str) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("llama_cpp")
    from llmlab_grpc.proto.llmlab.v1 import planner_pb2, planner_pb2_grpc

    node = node_factory("m-all", "--roles", "planner,llm,cache,bridge", "--no-mdns", "--http-port", "0",
                        start_timeout=120)
    query = planner_pb2.Query(text="Name one colour.", no_tools=True)
    query.params.max_tokens = 8
    task = node.call(planner_pb2_grpc.PlannerStub, "Ask", planner_pb2.AskRequest(query=query), timeout=120).task
    assert task.steps[-1].cache == planner_pb2.CACHE_OUTCOME_MISS
    generated = task.steps[-1].usage.completion_tokens
    assert generated > 0

    url = f"{http_url(node)}/metrics"
    status, text = scrape(url, {"authorization": f"Bearer {secret}"})
    assert status == 200, text
    assert value(text, "llmlab_grpc_requests_total",
                 {"service": "llmlab.v1.Planner", "method": "Ask", "code": "OK"}) == 1
    assert value(text, "llmlab_grpc_requests_total",  # the planner's own call to its llm role
                 {"service": "llmlab.v1.Inference", "method": "Generate", "code": "OK"}) == 1
    assert value(text, "llmlab_cache_misses_total", {"namespace": ""}) == 1
    assert value(text, "llmlab_tokens_generated_total", {"model": MODEL}) == generated
    assert value(text, "llmlab_generations_total", {"model": MODEL, "outcome": "ok"}) == 1
    assert (value(text, "llmlab_model_tokens_per_second", {"model": MODEL}) or 0) > 0 or generated == 1

    status, body = scrape(url, {"authorization": "Bearer wrong"})
    assert status == 401 and "wrong mesh secret" in body
