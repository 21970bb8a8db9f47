"""Generation throughput as llm nodes are added: 1, then 2 nodes behind one planner.

Each llm node runs the embedded SmolLM2 with one llama.cpp thread (``--llm-threads 1``)
and is pinned to a core of its own with ``os.sched_setaffinity``: the node process is
started from a thread pinned to that core, so the node, its own Ray cluster and the Ray
worker hosting the model all inherit the pin. A planner node (unpinned) spreads the
work. ``--askers`` concurrent askers (default 8) send distinct prompts that are not in
any cache (``no_cache``, greedy), ``--per-asker`` each, through ``Planner.Ask``. With 16 prompts a
leg a 9/7 split between two nodes alone caps the ratio at 16/9 = 1.78, so the default is 4 each
(32 prompts; 17/15 caps it at 1.88).

Per leg: aggregate tokens/s (completion tokens of every answer over the leg's wall time),
ask latency p50 and p99, and how many answers each llm node gave. Baseline: the 1-node
leg, measured in the same run. Goal (issue 15): 2 nodes >= 1.8x the tokens/s of one.

Needs at least two cores (it uses cores 0 and 1). Every node is stopped by PID; the run
is bounded by ``--budget-s``.
Run: .venv/bin/python scripts/bench/scaleout.py [--askers 8] [--per-asker 4] [--max-tokens 48]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc

from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.procs import NodeProcess, spawn_node
from llmlab_grpc.proto.llmlab.v1 import node_pb2, node_pb2_grpc, planner_pb2, planner_pb2_grpc
from scripts.bench.generation import MODEL
from scripts.bench.stats import report

SUBJECTS = ["the sea", "a cat", "the moon", "a city", "a forest", "a robot", "winter", "a train", "music",
            "a garden", "the desert", "a library", "coffee", "a bridge", "rain", "a mountain", "the night",
            "a market", "a river", "an island", "a clock", "the wind", "a lighthouse", "bread"]


@contextlib.contextmanager
def pinned(core: int) -> Iterator[None]:
    """Pin the calling thread to ``core`` for the block: processes started in it inherit the pin."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def llm_nodes_seen(planner: NodeProcess) -> set[str]:
    try:
        reply = planner.call(node_pb2_grpc.NodeStub, "ListPeers", node_pb2.ListPeersRequest(), timeout=2.0)
    except grpc.RpcError:
        return set()
    return {p.info.name for p in reply.peers if MODEL in p.info.models}


def wait_for(planner: NodeProcess, names: set[str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not names <= llm_nodes_seen(planner):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the planner did not see {sorted(names)} within {timeout_s:g} s")
        time.sleep(0.2)


def query(text: str, max_tokens: int) -> planner_pb2.Query:
    q = planner_pb2.Query(text=text, model=MODEL, no_cache=True, no_tools=True)
    q.params.max_tokens = max_tokens
    q.params.temperature = 0.0
    return q


async def run_leg(planner: NodeProcess, prompts: list[str], askers: int, max_tokens: int, deadline: float
                  ) -> tuple[float, list[float], int, Counter[str]]:
    """(wall seconds, per-ask latencies, completion tokens, answers per llm node)."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in prompts:
        queue.put_nowait(p)
    latencies: list[float] = []
    tokens = 0
    by_node: Counter[str] = Counter()
    metadata = bearer(planner.secret)
    async with grpc.aio.insecure_channel(planner.address) as channel:
        stub = planner_pb2_grpc.PlannerStub(channel)

        async def asker() -> None:
            nonlocal tokens
            while not queue.empty() and time.monotonic() < deadline:
                text = queue.get_nowait()
                start = time.perf_counter()
                reply = await stub.Ask(planner_pb2.AskRequest(query=query(text, max_tokens)), metadata=metadata,
                                       timeout=max(1.0, deadline - time.monotonic()))
                latencies.append(time.perf_counter() - start)
                step = reply.task.steps[-1]
                tokens += step.usage.completion_tokens
                by_node[step.node_name or step.node_id] += 1

        start = time.perf_counter()
        await asyncio.gather(*(asker() for _ in range(askers)))
        return time.perf_counter() - start, latencies, tokens, by_node


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--askers", type=int, default=8, help="concurrent askers (1..32)")
    parser.add_argument("--per-asker", type=int, default=4,
                        help="prompts per asker per leg (1..10); fewer make the split between two nodes coarse")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--budget-s", type=float, default=900.0, help="stop after this long (each leg gets half)")
    args = parser.parse_args()
    askers = max(1, min(args.askers, 32))
    per = max(1, min(args.per_asker, 10))
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        print("scaleout: needs two cores to pin two llm nodes; this process may use only", cores)
        return 2
    secret = secrets.token_urlsafe(24)
    log_dir = Path(tempfile.mkdtemp(prefix="llmlab-scaleout-"))
    print(f"node logs: {log_dir}; cores {cores[0]} and {cores[1]}; {askers} askers x {per} prompts per leg, "
          f"max_tokens {args.max_tokens}, greedy, no cache", flush=True)
    env = {"LLMLAB_CACHE_STORE": "memory"}
    nodes: list[NodeProcess] = []
    legs: dict[int, tuple[float, list[float], int, Counter[str]]] = {}
    try:
        # Asks wait in the llm nodes' queues on purpose here, and that wait counts as "no first token":
        # the product's 20 s default would fail over queued asks on a loaded machine.
        planner = spawn_node("so-planner", secret, "--roles", "planner", "--no-mdns", "--first-token-timeout", "600",
                             env=env, log_dir=log_dir)
        nodes.append(planner)
        start = time.monotonic()
        for count, core in ((1, cores[0]), (2, cores[1])):
            name = f"so-llm{count}"
            with pinned(core):
                nodes.append(spawn_node(name, secret, "--roles", "llm", "--no-mdns", "--llm-threads", "1",
                                        "--peer", planner.address, env=env, log_dir=log_dir, start_timeout=180))
            wait_for(planner, {f"so-llm{i}" for i in range(1, count + 1)})
            # Warm-up: each new node's first generation pays for loading; it is not measured.
            asyncio.run(run_leg(planner, [f"Say hello to {name}."] * count, count, 8, time.monotonic() + 120))
            prompts = [f"Write three sentences about {SUBJECTS[i % len(SUBJECTS)]} (leg {count}, #{i})."
                       for i in range(askers * per)]
            leg_deadline = time.monotonic() + (start + args.budget_s - time.monotonic()) / (3 - count)
            legs[count] = asyncio.run(run_leg(planner, prompts, askers, args.max_tokens, leg_deadline))
        print(f"\n{'leg':<8} {'answers':>7} {'tokens':>7} {'wall s':>8} {'tok/s':>8} {'ratio':>6}  per node")
        base = legs[1][2] / legs[1][0]
        for count, (wall, latencies, tokens, by_node) in legs.items():
            rate = tokens / wall
            spread = ", ".join(f"{k}={v}" for k, v in sorted(by_node.items()))
            print(f"{count} node{'s' if count > 1 else ' '}  {len(latencies):>7} {tokens:>7} {wall:8.1f} {rate:8.1f} "
                  f"{rate / base:6.2f}  {spread}")
        for count, (_, latencies, _, _) in legs.items():
            report(f"ask latency, {count} llm node(s)", latencies, width=30, unit="s")
        ratio = (legs[2][2] / legs[2][0]) / base
        print(f"goal: 2 nodes' aggregate tokens/s / 1 node's = {ratio:.2f} (>= 1.8)", flush=True)
    finally:
        for node in reversed(nodes):
            node.stop(signal.SIGTERM, timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
