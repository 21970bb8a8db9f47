"""Cache-hit latency, measured on this machine, against baselines measured in the same run.

Prints median (p50) and p99 and a ratio for:
- a plain dict lookup of the value by key                       (the in-process baseline)
- CacheManager.get_by_key / .get (key hashing included), memory and ray stores (vs the dict)
- Cache.Get over gRPC on loopback to a node process, memory and ray stores, one client
  (vs a bare gRPC echo of the same reply bytes between two processes: the floor). The echo's
  client is the Cache.Get client's: the same request message serialized, the same metadata,
  the reply parsed as a GetResponse, the same channel and process, so the ratio compares the
  servers' work. ``echo-raw``, the floor of earlier runs, is the same echo called with raw
  bytes and no metadata, its reply not parsed (~38k fewer client instructions a call);
  ``ray`` is the default store (a repeated hit is served from its in-process hot copy),
  ``ray-cold`` runs with ``--cache-hot-bytes 0`` so every hit reads Ray's object store
- a second floor: the same echo behind the node's own method table (mesh secret checked, call
  counted), the client sending the request with its metadata and parsing the GetResponse: what
  a node's server path costs without the cache's own work
- Cache.Get throughput with 16 concurrent calls from one asyncio client (vs the echo's)
- the goals of issue 15: Cache.Get [ray] p50 <= 1.2x the echo, 16-client throughput >= 0.8x,
  each beside its floor and with the ratio against echo-raw too, and the load average
- the same GET against a Redis server on loopback (Debian redis-server, redis-py), as the
  ratio llmlab/Redis; skipped with a note when either is not installed
- a cache hit through Planner.Ask on a planner+llm+cache node against a bare gRPC echo of the
  same AskResponse bytes in a separate small process, called as the stub calls Ask (the same
  AskRequest, metadata and deadline, the reply parsed), and against echo-raw (empty bytes, no
  metadata or deadline, reply not parsed), interleaved (issue 15's goal: 1.3x;
  ``openai_api.py --only-hits`` measures it against the same two echoes served by the node
  process itself, and floor 2), its p50 (the original plan's bar is 100 ms) and its speed-up
  over a miss on the embedded model, and each server's CPU per call (the node's, the echo's)

Every loop is bounded by a count and a time limit; every process is stopped by PID.
Run: .venv/bin/python scripts/bench/cache.py [--n 2000] [--size 1024] [--only-get | --only-ask]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
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
from scripts.bench.echo_floors import echo_handlers
from scripts.bench.stats import load_average, report

PROMPT, MODEL, PARAMS = "Tell me a joke", "smollm2-135m", {"temperature": 0.0}
ECHO_METHOD = "/bench.Echo/Echo"
SET_METHOD = "/bench.Echo/Set"
ECHO_REPLY_ENV = "LLMLAB_BENCH_ECHO_REPLY"
STORES = ("memory", "ray", "ray-cold")
TIME_LIMIT_S = 20.0
ROUNDS = 15
"""Throughput rounds: each leg runs one burst of calls per round (the median burst is reported)."""


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
    change in the machine's load falls on every leg alike, in a new shuffled order each round
    (a leg that always follows the same one measured up to ~6% off); stops at TIME_LIMIT_S per leg."""
    for _ in range(min(100, n)):
        for call in calls.values():
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    deadline = time.monotonic() + TIME_LIMIT_S * len(calls)
    order = list(calls.items())
    shuffler = random.Random(15)
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        shuffler.shuffle(order)
        for name, call in order:
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
    return samples


def report_rate(label: str, calls: int, seconds: float, baseline: float | None = None) -> float:
    """Print ``calls`` in ``seconds`` as calls/s (n: the calls of one burst), against ``baseline``'s."""
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
        reply = os.environ.get(ECHO_REPLY_ENV)
        echo, set_reply = echo_handlers(bytes.fromhex(reply) if reply else b"x" * size)

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


def start_echo(size: int, secret: str = "", reply: bytes = b"") -> tuple[subprocess.Popen[str], str]:
    """The echo floor (with ``secret``: the guarded one) in a child process, and its address;
    it answers ``reply`` (else ``size`` bytes)."""
    guarded = ["--echo-guarded"] if secret else []
    proc = subprocess.Popen([sys.executable, __file__, "--echo-server", str(size), *guarded], stdout=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL,
                            env={**os.environ, "LLMLAB_MESH_SECRET": secret, ECHO_REPLY_ENV: reply.hex()})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("echo listening on "):
        proc.kill()
        raise RuntimeError(f"echo server did not start: {line!r}")
    return proc, line.split()[-1]


# -- concurrency ---------------------------------------------------------------------------------

def server_cpu_per_call(pid: int, call: Callable[[], Any], calls: int, idle_s: float = 1.0) -> float:
    """CPU seconds process ``pid`` spends per ``call`` (sequential calls), less its idle rate
    (timers, threads) measured over ``idle_s`` first."""
    before = cpu_seconds(pid)
    time.sleep(idle_s)
    idle_rate = (cpu_seconds(pid) - before) / idle_s
    start, before = time.monotonic(), cpu_seconds(pid)
    for _ in range(calls):
        call()
    used = cpu_seconds(pid) - before
    return max(0.0, used - idle_rate * (time.monotonic() - start)) / calls


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (every thread of it) has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def rates_in_rounds(targets: dict[str, tuple[str, Callable[[grpc.aio.Channel], Callable[[], Any]]]],
                          concurrency: int, burst: int, rounds: int, pids: dict[str, int] | None = None
                          ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Calls per second of each leg's bursts: ``rounds`` rounds, one burst of ``burst`` calls by
    ``concurrency`` tasks per leg and round, the legs in a rotating order, each on its own open
    channel (made and warmed up first). Stops early at TIME_LIMIT_S per leg. Also the CPU
    seconds per call of each leg's server process (``pids``) over its bursts: what a call costs
    the server whatever else the machine runs (10 ms clock ticks: ~1% over 3,000 calls)."""
    channels = {name: grpc.aio.insecure_channel(address) for name, (address, _) in targets.items()}
    try:
        calls = {name: make(channels[name]) for name, (_, make) in targets.items()}
        for call in calls.values():
            for _ in range(20):
                await call()
        names = list(targets)
        samples: dict[str, list[float]] = {name: [] for name in names}
        cpu = dict.fromkeys(names, 0.0)
        deadline = time.monotonic() + TIME_LIMIT_S * len(names)
        for round_ in range(rounds):
            if time.monotonic() > deadline:
                break
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                pid = (pids or {}).get(name)
                before = cpu_seconds(pid) if pid else 0.0
                samples[name].append(burst / await timed_burst(calls[name], concurrency, burst))
                cpu[name] += cpu_seconds(pid) - before if pid else 0.0
        return samples, {name: cpu[name] / max(1, burst * len(samples[name])) for name in names}
    finally:
        for channel in channels.values():
            await channel.close()


async def timed_burst(call: Callable[[], Any], concurrency: int, n: int) -> float:
    """Seconds for ``n`` calls made by ``concurrency`` tasks."""
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


def echo_call(payload: bytes, metadata: Any = None, parse: Callable[[bytes], Any] | None = None
              ) -> Callable[[grpc.aio.Channel], Callable[[], Any]]:
    def make(channel: grpc.aio.Channel) -> Callable[[], Any]:
        method = channel.unary_unary(ECHO_METHOD, response_deserializer=parse)
        return lambda: method(payload, metadata=metadata)

    return make


def echo_as_get_call(request: cache_pb2.GetRequest, metadata: Any
                     ) -> Callable[[grpc.aio.Channel], Callable[[], Any]]:
    """The echo called exactly as ``cache_get_call`` calls Cache.Get (the generated stub's arguments)."""
    def make(channel: grpc.aio.Channel) -> Callable[[], Any]:
        method = channel.unary_unary(ECHO_METHOD, request_serializer=cache_pb2.GetRequest.SerializeToString,
                                     response_deserializer=cache_pb2.GetResponse.FromString,
                                     _registered_method=True)
        return lambda: method(request, metadata=metadata)

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
    """Cache hits through Planner.Ask vs misses that run the embedded model, and the hit against
    a bare gRPC echo answering the same ``AskResponse`` bytes (issue 15's floor), call by call."""
    from llmlab_grpc.proto.llmlab.v1 import planner_pb2, planner_pb2_grpc

    node = spawn_node("bench-planner", secret, "--roles", "planner,llm,cache", "--no-mdns", "--cache-store", "ray",
                      "--ray-address", gcs, start_timeout=120)
    metadata = bearer(secret)
    with grpc.insecure_channel(node.address) as channel:
        stub = planner_pb2_grpc.PlannerStub(channel)

        def request_for(text: str) -> planner_pb2.AskRequest:
            query = planner_pb2.Query(text=text, no_tools=True)
            query.params.max_tokens = 48
            return planner_pb2.AskRequest(query=query)

        def ask(text: str) -> planner_pb2.Task:
            return stub.Ask(request_for(text), metadata=metadata, timeout=120).task

        miss_samples = []
        for i in range(misses):
            start = time.perf_counter()
            task = ask(f"Tell me a joke about the number {i}")
            miss_samples.append(time.perf_counter() - start)
            assert task.steps[0].cache == planner_pb2.CACHE_OUTCOME_MISS
        miss = report("Planner.Ask, miss (embedded model, 48 tok)", miss_samples, unit="ms", width=44)
        assert ask(PROMPT).answer  # stored
        request = request_for(PROMPT)
        asked = stub.Ask(request, metadata=metadata, timeout=120)
        assert asked.task.steps[0].cache == planner_pb2.CACHE_OUTCOME_HIT
        # The floor: a bare echo answering the hit's own AskResponse bytes, called the way the
        # stub calls Ask (the request serialized, the metadata sent, the reply parsed).
        echo_proc, echo_addr = start_echo(0, reply=asked.SerializeToString())
        load_before = load_average()
        try:
            with grpc.insecure_channel(echo_addr) as echo_channel:
                echo = echo_channel.unary_unary(ECHO_METHOD,
                                                request_serializer=planner_pb2.AskRequest.SerializeToString,
                                                response_deserializer=planner_pb2.AskResponse.FromString,
                                                _registered_method=True)
                echo_raw = echo_channel.unary_unary(ECHO_METHOD)
                assert echo(request, metadata=metadata, timeout=120).task.answer == asked.task.answer
                samples = interleaved({"echo": lambda: echo(request, metadata=metadata, timeout=120),
                                       "echo-raw": lambda: echo_raw(b""),
                                       "hit": lambda: stub.Ask(request, metadata=metadata, timeout=120)}, n)
                # Server CPU per call (every thread of the serving process, its idle rate taken off):
                # tells the servers' work apart from how the machine scheduled them.
                cpu_calls = min(n, 500)
                per_call = {name: server_cpu_per_call(pid, call, cpu_calls) for name, pid, call in (
                    ("echo", echo_proc.pid, lambda: echo(request, metadata=metadata, timeout=120)),
                    ("hit", node.pid, lambda: stub.Ask(request, metadata=metadata, timeout=120)))}
        finally:
            echo_proc.kill()
            echo_proc.wait()
        floor = report(f"bare gRPC echo, {asked.ByteSize()} B AskResponse", samples["echo"], unit="ms", width=44)
        raw_floor = report("the same echo, raw bytes, reply not parsed", samples["echo-raw"], floor,
                           base_name="echo", unit="ms", width=44)
        hit = report("Planner.Ask, cache hit (goal p50 < 1.5 ms)", samples["hit"], floor, base_name="echo",
                     unit="ms", width=44)
        print(f"{'hit speed-up over a miss':<44} {miss / hit:8.0f}x  (original plan's bar for a hit: 100 ms)")
        echo_cpu, hit_cpu = per_call["echo"], per_call["hit"]
        print(f"server CPU per call: echo {echo_cpu * 1e6:.0f} us, Planner.Ask hit {hit_cpu * 1e6:.0f} us "
              f"({hit_cpu / echo_cpu:.2f}x; each process's idle rate taken off)")
        print(f"goal: Planner.Ask hit p50 / echo p50 = {hit / floor:.2f} (<= 1.3; {hit / raw_floor:.2f} against "
              f"echo-raw; legs interleaved call by call; load average {load_before} -> {load_average()})", flush=True)
    return node


def main() -> int:
    parser = argparse.ArgumentParser(description="cache-hit latency figures")
    parser.add_argument("--n", type=int, default=2000, help="calls per in-process measurement (default 2000)")
    parser.add_argument("--n-grpc", type=int, default=1000, help="calls per gRPC measurement (default 1000)")
    parser.add_argument("--size", type=int, default=1024, help="response bytes (default 1024)")
    parser.add_argument("--misses", type=int, default=5, help="Planner.Ask misses on the model (default 5)")
    parser.add_argument("--n-rate", type=int, default=3000,
                        help=f"calls per throughput leg, in {ROUNDS} bursts (default 3000)")
    parser.add_argument("--only-get", action="store_true",
                        help="only the gRPC legs and their goals (no Redis, no Planner.Ask hit)")
    parser.add_argument("--only-ask", action="store_true",
                        help="only the Planner.Ask legs (misses, and the hit against its echo)")
    parser.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--echo-guarded", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.echo_server is not None:
        serve_echo(opts.echo_server, opts.echo_guarded)
        return 0

    from llmlab_grpc.ray_runtime import ensure_ray

    if opts.only_ask:
        node = bench_planner(secrets.token_urlsafe(24), ensure_ray().get_runtime_context().gcs_address,
                             opts.n_grpc, opts.misses)
        node.stop(signal.SIGTERM, timeout=30)
        return 0
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
        reply = nodes[STORES.index("ray")].call(cache_pb2_grpc.CacheStub, "Get", request)
        reply_size = reply.ByteSize()
        echo_proc.kill()
        echo_proc.wait()
        echo_proc, echo_addr = start_echo(reply_size, reply=reply.SerializeToString())
        metadata = bearer(secret)
        guarded_proc, guarded_addr = start_echo(0, secret)
        procs.append(guarded_proc)
        parse = cache_pb2.GetResponse.FromString

        payload = request.SerializeToString()
        load_before = load_average()
        channels = [grpc.insecure_channel(address) for address in (echo_addr, guarded_addr,
                                                                   *(node.address for node in nodes))]
        try:
            channels[1].unary_unary(SET_METHOD)(reply.SerializeToString(), metadata=metadata)
            echo_raw = channels[0].unary_unary(ECHO_METHOD)
            echo = channels[0].unary_unary(ECHO_METHOD, request_serializer=cache_pb2.GetRequest.SerializeToString,
                                           response_deserializer=parse, _registered_method=True)
            assert echo(request, metadata=metadata).found
            guarded = channels[1].unary_unary(ECHO_METHOD, response_deserializer=parse)
            assert guarded(payload, metadata=metadata).found
            stubs = [cache_pb2_grpc.CacheStub(channel) for channel in channels[2:]]
            calls: dict[str, Callable[[], Any]] = {
                "echo": lambda: echo(request, metadata=metadata), "echo-raw": lambda: echo_raw(payload),
                "floor2": lambda: guarded(payload, metadata=metadata),
                **{store: (lambda s=stub: s.Get(request, metadata=metadata))
                   for store, stub in zip(STORES, stubs, strict=True)}}
            samples = interleaved(calls, opts.n_grpc)
        finally:
            for channel in channels:
                channel.close()
        floor = report(f"bare gRPC echo, {reply_size} B reply (floor)", samples["echo"], unit="us", width=44)
        raw_floor = report("the same echo, raw bytes, reply not parsed", samples["echo-raw"], floor,
                           base_name="echo", unit="us", width=44)
        guarded_floor = report("echo behind the node's method table (floor 2)", samples["floor2"], floor,
                               base_name="echo", unit="us", width=44)
        medians = {store: report(f"Cache.Get over gRPC [{store}]", samples[store], floor, base_name="echo", unit="us",
                                 width=44) for store in STORES}
        if not opts.only_get:
            bench_redis(response, opts.n_grpc, medians["memory"])

        # Throughput: ROUNDS rounds of a short burst per leg on open channels, the legs taking turns
        # (in a rotating order), so a change in the machine's load falls on every leg alike; each
        # leg's rate is its median burst, each ratio the median of the ratios round by round.
        targets = {"echo": (echo_addr, echo_as_get_call(request, metadata)),
                   "echo-raw": (echo_addr, echo_call(payload)),
                   "guarded": (guarded_addr, echo_call(payload, metadata, parse)),
                   **{store: (node.address, cache_get_call(request, metadata))
                      for node, store in zip(nodes, STORES, strict=True)}}
        rates: dict[str, float] = {}
        ratios: dict[str, float] = {}
        burst = max(16, opts.n_rate // ROUNDS)
        pids = {"echo": echo_proc.pid, "echo-raw": echo_proc.pid, "guarded": guarded_proc.pid,
                **{store: node.pid for node, store in zip(nodes, STORES, strict=True)}}
        cpu: dict[str, float] = {}
        for concurrency in (1, 16):
            rounds, cpu = asyncio.run(rates_in_rounds(targets, concurrency, burst, ROUNDS, pids))
            echo_rate = rates[f"echo{concurrency}"] = report_rate(
                f"echo throughput, {concurrency} concurrent", burst, burst / statistics.median(rounds["echo"]))
            for name, samples in rounds.items():
                if name != "echo":
                    label = {"guarded": "floor 2", "echo-raw": "echo-raw"}.get(name, f"Cache.Get [{name}]")
                    rates[f"{name}{concurrency}"] = report_rate(
                        f"{label} throughput, {concurrency} concurrent", burst, burst / statistics.median(samples),
                        echo_rate)
                    ratios[f"{name}{concurrency}"] = statistics.median(
                        leg / echo for leg, echo in zip(samples, rounds["echo"], strict=False))
            ratios[f"ray-over-raw{concurrency}"] = statistics.median(
                leg / raw for leg, raw in zip(rounds["ray"], rounds["echo-raw"], strict=False))
        print(f"goal: Cache.Get [ray] p50 / echo p50 = {medians['ray'] / floor:.2f} (<= 1.2; "
              f"[ray-cold] {medians['ray-cold'] / floor:.2f}, [memory] {medians['memory'] / floor:.2f}; "
              f"echo {floor * 1e6:.0f} us; against echo-raw {medians['ray'] / raw_floor:.2f})")
        print(f"goal: Cache.Get [ray] 16-client throughput / echo's = {ratios['ray16']:.2f} "
              f"(>= 0.8; median of {ROUNDS} paired rounds; [ray-cold] {ratios['ray-cold16']:.2f}, "
              f"[memory] {ratios['memory16']:.2f}; echo {rates['echo16']:.0f} calls/s; "
              f"against echo-raw {ratios['ray-over-raw16']:.2f})", flush=True)
        echo_cpu = cpu["echo"]
        print(f"server CPU per call at 16 clients: echo {echo_cpu * 1e6:.0f} us, Cache.Get [ray] "
              f"{cpu['ray'] * 1e6:.0f} us ({cpu['ray'] / echo_cpu:.2f}x; [memory] {cpu['memory'] / echo_cpu:.2f}x, "
              f"[ray-cold] {cpu['ray-cold'] / echo_cpu:.2f}x): the servers' side of the throughput ratio", flush=True)
        print(f"load average while measuring: {load_before} -> {load_average()}", flush=True)
        print(f"against floor 2 (the node's method table, reply parsed): Cache.Get [ray] p50 "
              f"{medians['ray'] / guarded_floor:.2f}x, [memory] {medians['memory'] / guarded_floor:.2f}x; "
              f"16-client throughput [ray] {rates['ray16'] / rates['guarded16']:.2f}, "
              f"[memory] {rates['memory16'] / rates['guarded16']:.2f} of floor 2's (medians)", flush=True)
        if not opts.only_get:
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
