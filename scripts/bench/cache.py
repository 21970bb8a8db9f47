"""Cache-hit latency, measured on this machine, against baselines measured in the same run.

Prints median (p50) and p99 and a ratio for:
- a plain dict lookup of the value by key                       (the in-process baseline)
- CacheManager.get_by_key / .get (key hashing included), memory and ray stores (vs the dict)
- Cache.Get over gRPC on loopback to a node process, memory and ray stores, one client
  (vs a bare gRPC echo of the same response bytes between two processes: the floor);
  ``ray`` is the default store (a repeated hit is served from its in-process hot copy),
  ``ray-cold`` runs with ``--cache-hot-bytes 0`` so every hit reads Ray's object store
- a second floor: the same echo behind the node's own method table (mesh secret checked, call
  counted), the client sending the request with its metadata and parsing the GetResponse: what
  a node's server path costs without the cache's own work
- Cache.Get throughput with 16 concurrent calls from one asyncio client (vs the echo's)
- the goals of issue 15: Cache.Get [ray] p50 <= 1.2x the echo, 16-client throughput >= 0.8x
- the same GET against a Redis server on loopback (Debian redis-server, redis-py), as the
  ratio llmlab/Redis; skipped with a note when either is not installed
- a cache hit through Planner.Ask on a planner+llm+cache node (goal p50 under 1.5 ms; the
  original plan's bar is 100 ms) and its speed-up over a miss on the embedded model

Every loop is bounded by a count and a time limit; every process is stopped by PID.
Run: .venv/bin/python scripts/bench/cache.py [--n 2000] [--size 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc

from llmlab_grpc.cache import CacheManager, cache_key
from llmlab_grpc.cache.stores import make_store
from llmlab_grpc.cache.stores.ray_store import RayStore
from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.procs import NodeProcess, spawn_node
from llmlab_grpc.proto.llmlab.v1 import cache_pb2, cache_pb2_grpc
from scripts.bench.stats import report

PROMPT, MODEL, PARAMS = "Tell me a joke", "smollm2-135m", {"temperature": 0.0}
ECHO_METHOD = "/bench.Echo/Echo"
SET_METHOD = "/bench.Echo/Set"
STORES = ("memory", "ray", "ray-cold")
TIME_LIMIT_S = 20.0
ROUNDS = 3
"""Throughput rounds per leg (the median round is reported)."""


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    """Seconds per call of ``fn``, n calls after a short warm-up, stopping at TIME_LIMIT_S."""
    for _ in range(min(100, n)):
        fn()
    samples: list[float] = []
    deadline = time.monotonic() + TIME_LIMIT_S
    while len(samples) < n and time.monotonic() < deadline:
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def interleaved(calls: dict[str, Callable[[], Any]], n: int) -> dict[str, list[float]]:
    """Seconds per call of each leg, the legs taking turns call by call (after a warm-up), so a
    change in the machine's load falls on every leg alike; stops at TIME_LIMIT_S per leg."""
    for _ in range(min(100, n)):
        for call in calls.values():
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    deadline = time.monotonic() + TIME_LIMIT_S * len(calls)
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
    return samples


def report_rate(label: str, calls: int, seconds: float, baseline: float | None = None) -> float:
    rate = calls / seconds
    ratio = f"  rate/echo={rate / baseline:8.2f}" if baseline else ""
    print(f"{label:<44} n={calls:<5} {rate:12.0f} calls/s{ratio}", flush=True)
    return rate


# -- the echo floor ------------------------------------------------------------------------------

def serve_echo(size: int, guarded: bool = False) -> None:
    """Child mode: a bare grpc.aio server answering every call with ``size`` bytes.

    ``guarded``: the same echo behind the node's own method table (mesh secret checked, call
    counted and timed: ``mesh/method_table.py``), answering the bytes ``/bench.Echo/Set`` gave it:
    the node's server path without the cache's work, the second floor the bench reports.
    """

    async def run() -> None:
        state = {"reply": b"x" * size}

        async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return state["reply"]

        async def set_reply(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            state["reply"] = request
            return b""

        server = grpc.aio.server()
        if guarded:
            from llmlab_grpc.mesh.method_table import MethodTable
            from llmlab_grpc.metrics import NodeMetrics, instrument

            table = MethodTable(os.environ["LLMLAB_MESH_SECRET"], instrument(NodeMetrics()))
            table.add(ECHO_METHOD, grpc.unary_unary_rpc_method_handler(echo))
            table.add(SET_METHOD, grpc.unary_unary_rpc_method_handler(set_reply))
            server.add_generic_rpc_handlers((table,))
        else:
            handler = grpc.method_handlers_generic_handler(
                "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
            server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"echo listening on 127.0.0.1:{port}", flush=True)
        await server.wait_for_termination()

    asyncio.run(run())


def start_echo(size: int, secret: str = "") -> tuple[subprocess.Popen[str], str]:
    """The echo floor (with ``secret``: the guarded one) in a child process, and its address."""
    guarded = ["--echo-guarded"] if secret else []
    proc = subprocess.Popen([sys.executable, __file__, "--echo-server", str(size), *guarded], stdout=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL, env={**os.environ, "LLMLAB_MESH_SECRET": secret})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("echo listening on "):
        proc.kill()
        raise RuntimeError(f"echo server did not start: {line!r}")
    return proc, line.split()[-1]


# -- concurrency ---------------------------------------------------------------------------------

async def throughput(address: str, make_call: Callable[[grpc.aio.Channel], Callable[[], Any]], concurrency: int,
                     n: int) -> float:
    """Seconds for ``n`` calls made by ``concurrency`` tasks sharing one channel."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = make_call(channel)
        for _ in range(20):
            await call()
        remaining = n
        deadline = time.monotonic() + TIME_LIMIT_S

        async def worker() -> int:
            nonlocal remaining
            done = 0
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                await call()
                done += 1
            return done

        start = time.perf_counter()
        done = sum(await asyncio.gather(*(worker() for _ in range(concurrency))))
        elapsed = time.perf_counter() - start
    return elapsed * n / max(1, done)


def echo_call(payload: bytes, metadata: Any = None, parse: Callable[[bytes], Any] | None = None
              ) -> Callable[[grpc.aio.Channel], Callable[[], Any]]:
    def make(channel: grpc.aio.Channel) -> Callable[[], Any]:
        method = channel.unary_unary(ECHO_METHOD, response_deserializer=parse)
        return lambda: method(payload, metadata=metadata)

    return make


def cache_get_call(request: cache_pb2.GetRequest, metadata: Any) -> Callable[[grpc.aio.Channel], Callable[[], Any]]:
    def make(channel: grpc.aio.Channel) -> Callable[[], Any]:
        stub = cache_pb2_grpc.CacheStub(channel)
        return lambda: stub.Get(request, metadata=metadata)

    return make


# -- the run -------------------------------------------------------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_redis(response: str, n: int, cache_get_median: float | None) -> None:
    """GET latency and throughput of a loopback Redis holding the same value."""
    import shutil

    try:
        import redis
        import redis.asyncio as aredis
    except ImportError:
        print("redis: skipped (pip install redis)")
        return
    server = shutil.which("redis-server")
    if server is None:
        print("redis: skipped (apt-get install redis-server)")
        return
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                             "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.set("joke", response)
        median = report("redis GET (loopback)", timed(lambda: client.get("joke"), n), unit="us", width=44)
        if cache_get_median:
            print(f"{'llmlab Cache.Get [memory] / redis GET':<44} ratio={cache_get_median / median:5.2f}x")

        async def rate(concurrency: int) -> float:
            aclient = aredis.Redis(host="127.0.0.1", port=port)
            start = time.perf_counter()

            async def worker(count: int) -> None:
                for _ in range(count):
                    await aclient.get("joke")

            await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
            elapsed = time.perf_counter() - start
            await aclient.aclose()
            return elapsed

        for concurrency in (1, 16):
            report_rate(f"redis throughput, {concurrency} concurrent", n, asyncio.run(rate(concurrency)))
    finally:
        proc.kill()
        proc.wait()


def bench_planner(secret: str, gcs: str, n: int, misses: int) -> NodeProcess:
    """Cache hits through Planner.Ask vs misses that run the embedded model."""
    from llmlab_grpc.proto.llmlab.v1 import planner_pb2, planner_pb2_grpc

    node = spawn_node("bench-planner", secret, "--roles", "planner,llm,cache", "--no-mdns", "--cache-store", "ray",
                      "--ray-address", gcs, start_timeout=120)
    metadata = bearer(secret)
    with grpc.insecure_channel(node.address) as channel:
        stub = planner_pb2_grpc.PlannerStub(channel)

        def ask(text: str) -> planner_pb2.Task:
            query = planner_pb2.Query(text=text, no_tools=True)
            query.params.max_tokens = 48
            return stub.Ask(planner_pb2.AskRequest(query=query), metadata=metadata, timeout=120).task

        miss_samples = []
        for i in range(misses):
            start = time.perf_counter()
            task = ask(f"Tell me a joke about the number {i}")
            miss_samples.append(time.perf_counter() - start)
            assert task.steps[0].cache == planner_pb2.CACHE_OUTCOME_MISS
        miss = report("Planner.Ask, miss (embedded model, 48 tok)", miss_samples, unit="ms", width=44)
        assert ask(PROMPT).answer  # stored
        assert ask(PROMPT).steps[0].cache == planner_pb2.CACHE_OUTCOME_HIT
        hit = report("Planner.Ask, cache hit (goal p50 < 1.5 ms)", timed(lambda: ask(PROMPT), n), unit="ms",
                     width=44)
        print(f"{'hit speed-up over a miss':<44} {miss / hit:8.0f}x  (original plan's bar for a hit: 100 ms)")
    return node


def main() -> int:
    parser = argparse.ArgumentParser(description="cache-hit latency figures")
    parser.add_argument("--n", type=int, default=2000, help="calls per in-process measurement (default 2000)")
    parser.add_argument("--n-grpc", type=int, default=1000, help="calls per gRPC measurement (default 1000)")
    parser.add_argument("--size", type=int, default=1024, help="response bytes (default 1024)")
    parser.add_argument("--misses", type=int, default=5, help="Planner.Ask misses on the model (default 5)")
    parser.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--echo-guarded", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.echo_server is not None:
        serve_echo(opts.echo_server, opts.echo_guarded)
        return 0

    from llmlab_grpc.ray_runtime import ensure_ray

    response = "x" * opts.size
    key = cache_key(PROMPT, MODEL, PARAMS)
    print(f"cache-hit latency, {opts.size} B response", flush=True)

    plain = {key: response}
    base = report("dict lookup (baseline)", timed(lambda: plain[key], opts.n), unit="us", width=44)
    ray = ensure_ray()
    for store in STORES:
        value_store = make_store(store.removesuffix("-cold"), hot_bytes=0 if store == "ray-cold" else None)
        cache = CacheManager(value_store)
        cache.put(PROMPT, MODEL, response, PARAMS)
        if isinstance(value_store, RayStore):
            value_store.flush()
        report(f"CacheManager.get_by_key [{store}]", timed(lambda c=cache: c.get_by_key(key), opts.n), base,
               base_name="dict", unit="us", width=44)
        report(f"CacheManager.get (key hashed) [{store}]",
               timed(lambda c=cache: c.get(PROMPT, MODEL, PARAMS), opts.n), base, base_name="dict", unit="us",
               width=44)

    secret = secrets.token_urlsafe(24)
    nodes: list[NodeProcess] = []
    procs: list[subprocess.Popen[str]] = []
    echo_proc, echo_addr = start_echo(0)
    try:
        lookup = cache_pb2.CacheLookup(prompt=PROMPT, model=MODEL)
        lookup.params.temperature = 0.0
        request = cache_pb2.GetRequest(lookup=lookup)
        gcs = ray.get_runtime_context().gcs_address
        for store in STORES:
            hot = ["--cache-hot-bytes", "0"] if store == "ray-cold" else []
            node = spawn_node(f"bench-cache-{store}", secret, "--roles", "cache", "--no-mdns",
                              "--cache-store", store.removesuffix("-cold"), "--ray-address", gcs, *hot)
            nodes.append(node)
            reply_size = node.call(cache_pb2_grpc.CacheStub, "Put", cache_pb2.PutRequest(
                lookup=lookup, response=response)).ByteSize()
        reply = nodes[0].call(cache_pb2_grpc.CacheStub, "Get", request)
        reply_size = reply.ByteSize()
        echo_proc.kill()
        echo_proc.wait()
        echo_proc, echo_addr = start_echo(reply_size)
        metadata = bearer(secret)
        guarded_proc, guarded_addr = start_echo(0, secret)
        procs.append(guarded_proc)
        parse = cache_pb2.GetResponse.FromString

        payload = request.SerializeToString()
        channels = [grpc.insecure_channel(address) for address in (echo_addr, guarded_addr,
                                                                   *(node.address for node in nodes))]
        try:
            channels[1].unary_unary(SET_METHOD)(reply.SerializeToString(), metadata=metadata)
            echo = channels[0].unary_unary(ECHO_METHOD)
            guarded = channels[1].unary_unary(ECHO_METHOD, response_deserializer=parse)
            assert guarded(payload, metadata=metadata).found
            stubs = [cache_pb2_grpc.CacheStub(channel) for channel in channels[2:]]
            calls: dict[str, Callable[[], Any]] = {
                "echo": lambda: echo(payload), "floor2": lambda: guarded(payload, metadata=metadata),
                **{store: (lambda s=stub: s.Get(request, metadata=metadata))
                   for store, stub in zip(STORES, stubs, strict=True)}}
            samples = interleaved(calls, opts.n_grpc)
        finally:
            for channel in channels:
                channel.close()
        floor = report(f"bare gRPC echo, {reply_size} B reply (floor)", samples["echo"], unit="us", width=44)
        guarded_floor = report("echo behind the node's method table (floor 2)", samples["floor2"], floor,
                               base_name="echo", unit="us", width=44)
        medians = {store: report(f"Cache.Get over gRPC [{store}]", samples[store], floor, base_name="echo", unit="us",
                                 width=44) for store in STORES}
        bench_redis(response, opts.n_grpc, medians["memory"])

        # Throughput: every leg once per round, ROUNDS rounds, the median round per leg, so a burst
        # of other work on the machine lands on one round rather than on one leg.
        rates: dict[str, float] = {}
        targets = {"echo": (echo_addr, echo_call(payload)),
                   "guarded": (guarded_addr, echo_call(payload, metadata, parse)),
                   **{store: (node.address, cache_get_call(request, metadata))
                      for node, store in zip(nodes, STORES, strict=True)}}
        for concurrency in (1, 16):
            rounds: dict[str, list[float]] = {name: [] for name in targets}
            for _ in range(ROUNDS):
                for name, (address, make) in targets.items():
                    seconds = asyncio.run(throughput(address, make, concurrency, opts.n_grpc))
                    rounds[name].append(opts.n_grpc / seconds)
            echo_rate = rates[f"echo{concurrency}"] = report_rate(
                f"echo throughput, {concurrency} concurrent", opts.n_grpc,
                opts.n_grpc / statistics.median(rounds["echo"]))
            for name in targets:
                if name != "echo":
                    label = "floor 2" if name == "guarded" else f"Cache.Get [{name}]"
                    rates[f"{name}{concurrency}"] = report_rate(
                        f"{label} throughput, {concurrency} concurrent", opts.n_grpc,
                        opts.n_grpc / statistics.median(rounds[name]), echo_rate)
        print(f"goal: Cache.Get [ray] p50 / echo p50 = {medians['ray'] / floor:.2f} (<= 1.2; "
              f"[ray-cold] {medians['ray-cold'] / floor:.2f}, [memory] {medians['memory'] / floor:.2f})")
        print(f"goal: Cache.Get [ray] 16-client throughput / echo's = {rates['ray16'] / rates['echo16']:.2f} "
              f"(>= 0.8; [ray-cold] {rates['ray-cold16'] / rates['echo16']:.2f}, "
              f"[memory] {rates['memory16'] / rates['echo16']:.2f})", flush=True)
        print(f"against floor 2 (the node's method table, reply parsed): Cache.Get [ray] p50 "
              f"{medians['ray'] / guarded_floor:.2f}x, [memory] {medians['memory'] / guarded_floor:.2f}x; "
              f"16-client throughput [ray] {rates['ray16'] / rates['guarded16']:.2f}, "
              f"[memory] {rates['memory16'] / rates['guarded16']:.2f} of floor 2's", flush=True)
        nodes.append(bench_planner(secret, gcs, opts.n_grpc, opts.misses))
    finally:
        for node in nodes:
            node.stop(signal.SIGTERM, timeout=30)
        for proc in [echo_proc, *procs]:
            proc.kill()
            proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
