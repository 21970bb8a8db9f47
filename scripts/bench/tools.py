"""Calculator latency: ``Execute`` through gRPC on loopback versus calling the tool in-process.

Measured in the same run, on this machine:
- in-process: ``await CalculatorTool().run(...)`` (validation, AST evaluation, timeout wrapper) — the baseline;
- gRPC direct: ``ToolExecutor.Execute`` on a node that has the calculator (auth, Struct conversion, HTTP/2);
- gRPC routed: ``Execute`` on a node without the calculator, which forwards to the one that has it.

Prints median and p99 of each and the ratio to the in-process baseline. Bounded by ``--calls``
per series and ``--max-seconds`` per series; every node is stopped by PID.
Run: .venv/bin/python scripts/bench/tools.py
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc

from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.procs import NodeProcess, spawn_node
from llmlab_grpc.proto.llmlab.v1 import tool_executor_pb2, tool_executor_pb2_grpc
from llmlab_grpc.tools.builtin.calculator import CalculatorTool
from llmlab_grpc.tools.convert import to_struct
from scripts.bench.stats import report

EXPRESSION = "25 * 67 + sqrt(16) / 3"
WARMUP = 30


def bench_in_process(calls: int, max_seconds: float) -> list[float]:
    tool = CalculatorTool()

    async def run() -> list[float]:
        samples = []
        for _ in range(WARMUP):
            await tool.run({"expression": EXPRESSION})
        stop = time.monotonic() + max_seconds
        for _ in range(calls):
            started = time.perf_counter()
            outcome = await tool.run({"expression": EXPRESSION})
            samples.append(time.perf_counter() - started)
            assert outcome.ok, outcome.error
            if time.monotonic() > stop:
                break
        return samples

    return asyncio.run(run())


def bench_grpc(node: NodeProcess, calls: int, max_seconds: float, expect_node: str) -> list[float]:
    request = tool_executor_pb2.ExecuteRequest(tool="calculator", arguments=to_struct({"expression": EXPRESSION}))
    metadata = bearer(node.secret)
    with grpc.insecure_channel(node.address) as channel:
        execute: Callable[..., tool_executor_pb2.ExecuteResponse] = \
            tool_executor_pb2_grpc.ToolExecutorStub(channel).Execute
        for _ in range(WARMUP):
            execute(request, metadata=metadata, timeout=10)
        samples = []
        stop = time.monotonic() + max_seconds
        for _ in range(calls):
            started = time.perf_counter()
            reply = execute(request, metadata=metadata, timeout=10)
            samples.append(time.perf_counter() - started)
            assert not reply.HasField("error") and reply.node_name == expect_node, reply
            if time.monotonic() > stop:
                break
    return samples


def wait_for_route(router: NodeProcess, limit_s: float = 30.0) -> None:
    request = tool_executor_pb2.ExecuteRequest(tool="calculator", arguments=to_struct({"expression": "1"}))
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            router.call(tool_executor_pb2_grpc.ToolExecutorStub, "Execute", request, timeout=2)
            return
        except grpc.RpcError:
            time.sleep(0.1)
    raise TimeoutError("the router node never learned of the calculator node")


def main() -> int:
    parser = argparse.ArgumentParser(description="calculator Execute latency: gRPC loopback vs in-process")
    parser.add_argument("--calls", type=int, default=1000, help="calls per series (default 1000)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time limit per series (default 30)")
    opts = parser.parse_args()
    calls = max(10, min(opts.calls, 100_000))

    baseline = report("in-process tool.run", bench_in_process(calls, opts.max_seconds), width=24)
    secret = secrets.token_urlsafe(24)
    nodes: list[NodeProcess] = []
    with tempfile.TemporaryDirectory() as home:
        env = {"LLMLAB_HOME": home}
        try:
            calc = spawn_node("bench-calc", secret, "--roles", "tools", "--tools", "calculator", "--no-mdns",
                              env=env)
            nodes.append(calc)
            router = spawn_node("bench-router", secret, "--roles", "tools", "--tools", "none", "--no-mdns",
                                "--peer", calc.address, env=env)
            nodes.append(router)
            report("gRPC Execute, direct", bench_grpc(calc, calls, opts.max_seconds, "bench-calc"), baseline,
                   base_name="in-process", width=24)
            wait_for_route(router)
            report("gRPC Execute, 1 hop", bench_grpc(router, calls, opts.max_seconds, "bench-calc"), baseline,
                   base_name="in-process", width=24)
        finally:
            for node in nodes:
                node.stop(signal.SIGTERM, timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
