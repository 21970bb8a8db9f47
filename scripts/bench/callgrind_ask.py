"""Server instructions per call of a ``Planner.Ask`` cache hit and of the gRPC echo floors (callgrind).

Wall-clock ratios on the shared 2-core machine move with other people's work; instruction
counts do not. This runs a planner+cache node
(memory store) with the two echo floors of ``openai_api.py`` in one process under
``valgrind --tool=callgrind --instr-atstart=no``, warms every leg up, then for each leg turns
instrumentation on, zeroes the counters, sends ``--calls`` sequential calls and dumps; the
dump's total, less what the node's timers ran meanwhile (their rate measured on an idle leg
first), divided by the calls is the figure. Legs: ``echo`` (the bare echo sent what ``Ask`` is
sent: the same request bytes, metadata and deadline), ``echo-raw`` (sent empty bytes and no
metadata: the echo of runs before 2026-12-02), ``floor2`` (the echo behind the node's method
table) and ``ask`` (a ``Planner.Ask`` hit). Usage::

    .venv/bin/python scripts/bench/callgrind_ask.py --calls 500

Needs valgrind (``callgrind_control`` on PATH). The node and valgrind are stopped by PID.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llmlab_grpc.mesh.auth import bearer  # noqa: E402
from llmlab_grpc.proto.llmlab.v1 import cache_pb2, cache_pb2_grpc, planner_pb2, planner_pb2_grpc  # noqa: E402
from scripts.bench.echo_floors import (  # noqa: E402
    ECHO_METHOD,
    GUARDED_METHOD,
    SET_ECHO_METHOD,
    serve_node_with_floors,
)

MODEL = "bench-model"
HIT_PROMPT = "Name three colours of the rainbow."
ANSWER = "Red, orange and yellow are three colours of the rainbow."
READY = "callgrind bench ready "


def serve(argv: list[str]) -> int:
    """Child mode: ``llmlab node ARGV`` plus a bare echo and the echo behind the node's method table."""
    return serve_node_with_floors(
        argv, lambda settings, address, port: print(f"{READY}{address} 127.0.0.1:{port}", flush=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="calls per measured leg (1..5000)")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured calls per leg first")
    parser.add_argument("--start-timeout-s", type=float, default=600.0)
    parser.add_argument("--idle-s", type=float, default=3.0, help="seconds of the idle leg (the timers' rate)")
    parser.add_argument("--keep", action="store_true", help="keep the callgrind dumps (their directory is printed)")
    if sys.argv[1:2] == ["--serve"]:
        return serve(sys.argv[2:])
    args = parser.parse_args()
    calls = max(1, min(args.calls, 5000))
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    secret = secrets.token_urlsafe(24)
    work = Path(tempfile.mkdtemp(prefix="llmlab-callgrind-"))
    out = work / "callgrind.out"
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}.%p",
           sys.executable, __file__, "--serve", "--name", "bench-callgrind", "--host", "127.0.0.1", "--port", "0",
           "--roles", "planner,cache", "--no-mdns"]
    env = {**os.environ, "LLMLAB_MESH_SECRET": secret, "LLMLAB_CACHE_STORE": "memory"}
    log = open(work / "node.log", "w")  # noqa: SIM115 - the child's for its life
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + args.start_timeout_s
        assert proc.stdout is not None
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line or line.startswith(READY):
                break
        if not line.startswith(READY):
            print(f"the node did not start; log: {work / 'node.log'}", file=sys.stderr)
            return 1
        node_address, echo_address = line[len(READY):].split()
        meta = bearer(secret)
        node = grpc.insecure_channel(node_address)
        echo_ch = grpc.insecure_channel(echo_address)
        query = planner_pb2.Query(text=HIT_PROMPT, model=MODEL, no_tools=True, params={"max_tokens": 24})
        lookup = cache_pb2.CacheLookup(prompt=HIT_PROMPT, model=MODEL,
                                       params={"max_tokens": 24, "temperature": 0.7, "seed": 42})
        cache_pb2_grpc.CacheStub(node).Put(cache_pb2.PutRequest(lookup=lookup, response=ANSWER), metadata=meta,
                                           timeout=120)
        stub = planner_pb2_grpc.PlannerStub(node)
        asked = stub.Ask(planner_pb2.AskRequest(query=query), metadata=meta, timeout=120)
        assert asked.task.steps[-1].cache == planner_pb2.CACHE_OUTCOME_HIT, asked.task
        echo_ch.unary_unary(SET_ECHO_METHOD)(asked.SerializeToString(), timeout=120)
        # The echo legs are sent what Ask is sent (the same request bytes, metadata and deadline), so
        # the server parses the same headers; echo-raw is sent empty bytes and no metadata.
        request = planner_pb2.AskRequest(query=query)
        echo = echo_ch.unary_unary(ECHO_METHOD, request_serializer=planner_pb2.AskRequest.SerializeToString,
                                   response_deserializer=planner_pb2.AskResponse.FromString)
        echo_raw = echo_ch.unary_unary(ECHO_METHOD)
        guarded = echo_ch.unary_unary(GUARDED_METHOD, request_serializer=planner_pb2.AskRequest.SerializeToString,
                                      response_deserializer=planner_pb2.AskResponse.FromString)

        def ask() -> None:
            stub.Ask(request, metadata=meta, timeout=120)

        legs = {"echo": lambda: echo(request, metadata=meta, timeout=120),
                "echo-raw": lambda: echo_raw(b"", timeout=120),
                "floor2": lambda: guarded(request, metadata=meta, timeout=120),
                "ask": ask}
        pid = str(proc.pid)

        def counted(run: Callable[[], None]) -> tuple[int, float]:
            """Instructions the node ran during ``run`` (instrumented, zeroed, dumped) and its seconds."""
            subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
            start = time.monotonic()
            run()
            seconds = time.monotonic() - start
            before = set(work.glob("callgrind.out.*"))
            subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
            dumps: list[Path] = []
            for _ in range(600):  # the dump is written when valgrind next takes the command: wait for it
                dumps = sorted(set(work.glob("callgrind.out.*")) - before)
                if dumps and all("totals:" in d.read_text(errors="replace") for d in dumps):
                    break
                time.sleep(0.1)
            subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
            total = 0
            for dump in dumps:
                match = re.search(r"^totals:\s+(\d+)", dump.read_text(errors="replace"), re.M)
                if match:
                    total += int(match.group(1))
            return total, seconds

        # The node's timers (heartbeats, load sampling) run whether or not it is called, and a leg
        # takes longer on a busy machine: their rate when idle is taken off each leg.
        idle, idle_s = counted(lambda: time.sleep(args.idle_s))
        idle_rate = idle / idle_s
        print(f"idle     {idle_rate / 1000:9.1f}k instructions per second (timers; taken off each leg)", flush=True)
        results: dict[str, float] = {}
        for name, call in legs.items():
            for _ in range(args.warmup):
                call()

            def run(call: Callable[[], Any] = call) -> None:
                for _ in range(calls):
                    call()

            total, seconds = counted(run)
            raw = total / calls
            results[name] = (total - idle_rate * seconds) / calls
            print(f"{name:9s}{results[name] / 1000:9.1f}k instructions per call "
                  f"({raw / 1000:.1f}k before the idle rate; {calls} calls in {seconds:.1f} s)", flush=True)
        print(f"Planner.Ask hit / echo = {results['ask'] / results['echo']:.2f} by instructions "
              f"({results['ask'] / results['echo-raw']:.2f} against echo-raw, "
              f"{results['ask'] / results['floor2']:.2f} against floor 2)")
        node.close()
        echo_ch.close()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"dumps in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
