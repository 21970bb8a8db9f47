"""Server instructions per ``/v1`` cache hit and per floor request, counted by callgrind.

Wall-clock ratios on the shared 2-core machine move with other people's work; instruction
counts do not. This runs the node of ``scripts/bench/openai_api.py`` (its ``--serve`` child
mode: ``llmlab node`` plus the bare Starlette floor route on the node's own HTTP server) under
``valgrind --tool=callgrind --instr-atstart=no``, fills the cache with one miss, warms every
leg up, then for each leg turns instrumentation on, zeroes the counters, sends ``--calls``
sequential requests over one keep-alive connection, dumps, and divides the dump's total by
the number of calls. The Ray workers (the model) run in other processes and are not counted.

Legs: ``floor`` (the bare route answering the very JSON body of the hit), ``v1`` (POST
``/v1/chat/completions``, non-streamed, the same body the wall-clock bench sends) and ``idle``
(no requests for ``--idle-s``: the rate of the node's own timers, whose share of each leg's
time is taken off that leg's count).

Needs valgrind (``apt-get install valgrind``). Bounded: ``--calls`` (1..5000) per leg,
``--start-timeout-s`` for the node's start under valgrind.
Run: .venv/bin/python scripts/bench/v1_instructions.py [--calls 500]
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
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llmlab_grpc.proto.llmlab.v1 import node_pb2, node_pb2_grpc
from scripts.bench.generation import MODEL
from scripts.bench.openai_api import FLOOR_PATH, HIT_PROMPT, spawn_bench_node

TOTALS_RE = re.compile(rb"^(?:totals|summary): (\d+)", re.M)


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=300)


def dumped_total(out_dir: Path, before: set[Path]) -> int:
    """The instruction total of the dump that appeared since ``before`` (one per ``-d``)."""
    for _ in range(600):
        new = sorted(set(out_dir.glob("callgrind.out.*")) - before, key=lambda p: p.stat().st_mtime)
        if new:
            text = new[-1].read_bytes()
            match = TOTALS_RE.search(text)
            if match:
                return int(match.group(1))
        time.sleep(0.1)
    raise RuntimeError("callgrind wrote no dump")


def measure(pid: int, out_dir: Path, calls: int, send: object) -> tuple[int, float]:
    """(instructions per call, seconds) of ``calls`` calls of ``send`` with instrumentation on."""
    assert callable(send)
    control(pid, "-z")
    before = set(out_dir.glob("callgrind.out.*"))
    start = time.monotonic()
    for _ in range(calls):
        send()
    took = time.monotonic() - start
    control(pid, "-d")
    return dumped_total(out_dir, before) // max(1, calls), took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="requests per leg (1..5000)")
    parser.add_argument("--start-timeout-s", type=float, default=900.0)
    parser.add_argument("--idle-s", type=float, default=10.0, help="length of the idle leg (timers' rate)")
    args = parser.parse_args()
    calls = max(1, min(args.calls, 5000))
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    secret = secrets.token_urlsafe(24)
    work = Path(tempfile.mkdtemp(prefix="llmlab-callgrind-"))
    wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={work}/callgrind.out.%p"]
    print(f"node log and dumps: {work}", flush=True)
    node, _ = spawn_bench_node(secret, ["--roles", "planner,tools,llm,cache,bridge", "--no-mdns", "--http-port", "0"],
                               work, timeout_s=args.start_timeout_s, wrapper=wrapper)
    try:
        info = node.call(node_pb2_grpc.NodeStub, "GetInfo", node_pb2.GetInfoRequest(), timeout=120).info
        base = info.http_url
        body = {"model": MODEL, "messages": [{"role": "user", "content": HIT_PROMPT}], "max_tokens": 24,
                "llmlab": {"tools": False}}
        http = httpx.Client(headers={"authorization": f"Bearer {secret}"}, timeout=600)
        http.post(f"{base}/v1/chat/completions", json=body).raise_for_status()  # the miss that fills the cache
        hit = http.post(f"{base}/v1/chat/completions", json=body)
        assert hit.headers["x-llmlab-cache"] == "hit", hit.headers
        http.put(f"{base}{FLOOR_PATH}", content=hit.content).raise_for_status()

        def v1() -> None:
            reply = http.post(f"{base}/v1/chat/completions", json=body)
            assert reply.status_code == 200 and reply.headers["x-llmlab-cache"] == "hit", reply.headers

        def floor() -> None:
            http.post(f"{base}{FLOOR_PATH}", json=body).raise_for_status()

        for _ in range(50):  # warm-up: caches, specialisations, first-call paths
            v1()
            floor()
        control(node.pid, "-i", "on")
        floor_n, floor_s = measure(node.pid, work, calls, floor)
        v1_n, v1_s = measure(node.pid, work, calls, v1)
        idle_n, idle_s = measure(node.pid, work, 1, lambda: time.sleep(args.idle_s))
        # The node's own timers run while a leg does: their rate times the leg's duration, per call,
        # is taken off each leg, so the machine's load (which stretches a leg) moves the figures less.
        rate = idle_n / idle_s
        floor_net = floor_n - rate * floor_s / calls
        v1_net = v1_n - rate * v1_s / calls
        print(f"{calls} calls per leg, server instructions per call (callgrind; {len(hit.content)} B answer)")
        print(f"  floor (bare Starlette route)   {floor_net:>12,.0f}   (raw {floor_n:,})")
        print(f"  v1 hit (/v1/chat/completions)  {v1_net:>12,.0f}   (raw {v1_n:,})")
        print(f"  v1 - floor {v1_net - floor_net:,.0f}   v1 / floor {v1_net / floor_net:.2f}")
        print(f"  idle: {rate:,.0f} instructions/s of the node's own timers, taken off both legs "
              f"({floor_s:.1f} s and {v1_s:.1f} s)")
        print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
        http.close()
    finally:
        node.stop(signal.SIGTERM, timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
