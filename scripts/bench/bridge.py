"""Task round trip through the bridge: gRPC → bridge node → WebSocket → mobile node → back.

Measured in the same run, on this machine, against one node process with the roles
``bridge,tools`` (calculator only):
- baseline: ``ToolExecutor.Execute`` of ``calculator`` on that node (a direct gRPC tool call);
- ``local_cache`` on a mobile node (``target_node_id``), the bridge translating the call into a
  ``task_assignment`` and the ``task_result`` back, with 1 and with 50 connected mobile
  clients (``llmlab_grpc.bridge.client.MobileClient``, the browser's protocol in Python), one
  call at a time and with 50 callers at once (compared with the direct call under 50 callers too);
- the same with a real headless Chromium page running ``frontend/mobile_worker.js``
  (skipped with ``--no-browser`` or when /usr/bin/chromium is missing).

Prints median and p99 per series and the ratio of the median to the baseline. Bounded by
``--calls`` per series and ``--max-seconds`` per series; the node is stopped by PID.
Run: .venv/bin/python scripts/bench/bridge.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc

from llmlab_grpc.bridge.client import MobileClient
from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.procs import NodeProcess, spawn_node
from llmlab_grpc.proto.llmlab.v1 import tool_executor_pb2, tool_executor_pb2_grpc
from llmlab_grpc.tools.convert import to_struct
from scripts.bench.stats import report

WARMUP = 20
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class Caller:
    """Blocking ``Execute`` calls on one node (one channel per thread)."""

    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.metadata = bearer(node.secret)
        self._local = threading.local()

    def execute(self, request: tool_executor_pb2.ExecuteRequest) -> tool_executor_pb2.ExecuteResponse:
        stub = getattr(self._local, "stub", None)
        if stub is None:
            channel = grpc.insecure_channel(self.node.address)
            stub = self._local.stub = tool_executor_pb2_grpc.ToolExecutorStub(channel)
        reply: tool_executor_pb2.ExecuteResponse = stub.Execute(request, metadata=self.metadata, timeout=10)
        if reply.HasField("error"):
            raise RuntimeError(f"{reply.error.code}: {reply.error.message}")
        return reply

    def timed(self, request: tool_executor_pb2.ExecuteRequest) -> float:
        started = time.perf_counter()
        self.execute(request)
        return time.perf_counter() - started


def mobile_request(node_id: str) -> tool_executor_pb2.ExecuteRequest:
    return tool_executor_pb2.ExecuteRequest(tool="local_cache", target_node_id=node_id,
                                            arguments=to_struct({"key": "0" * 64}))


def sequential(caller: Caller, requests: list[tool_executor_pb2.ExecuteRequest], calls: int,
               max_seconds: float) -> list[float]:
    for i in range(WARMUP):
        caller.execute(requests[i % len(requests)])
    samples: list[float] = []
    stop = time.monotonic() + max_seconds
    for i in range(calls):
        samples.append(caller.timed(requests[i % len(requests)]))
        if time.monotonic() > stop:
            break
    return samples


def concurrent(caller: Caller, requests: list[tool_executor_pb2.ExecuteRequest], calls: int,
               max_seconds: float) -> tuple[list[float], float]:
    """One caller thread per request target; returns latencies and calls per second."""
    stop = time.monotonic() + max_seconds
    per_worker = max(1, calls // len(requests))

    def worker(request: tool_executor_pb2.ExecuteRequest) -> list[float]:
        caller.execute(request)
        out = []
        for _ in range(per_worker):
            out.append(caller.timed(request))
            if time.monotonic() > stop:
                break
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(len(requests)) as pool:
        results = list(pool.map(worker, requests))
    elapsed = time.perf_counter() - started
    samples = [s for r in results for s in r]
    return samples, len(samples) / elapsed


class Mobiles:
    """``count`` Python mobile clients on their own event loop thread."""

    def __init__(self, base_url: str, token: str, count: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.clients: list[MobileClient] = []
        self.runners: list[asyncio.Task[None]] = []
        self._call(self._open(base_url, token, count))

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    async def _open(self, base_url: str, token: str, count: int) -> None:
        for i in range(count):
            client = MobileClient(base_url, token, name=f"bench-mobile-{i:02d}")
            await client.connect()
            self.clients.append(client)
            self.runners.append(asyncio.create_task(client.run()))

    async def _close(self) -> None:
        for client in self.clients:
            await client.close()
        await asyncio.gather(*self.runners, return_exceptions=True)

    def close(self) -> None:
        self._call(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def wait_for_row(node: NodeProcess, node_ids: list[str], limit_s: float = 30.0) -> None:
    """Until ListTools of the node names every mobile client as an owner of local_cache."""
    deadline = time.monotonic() + limit_s
    request = tool_executor_pb2.ListToolsRequest()
    while time.monotonic() < deadline:
        reply = node.call(tool_executor_pb2_grpc.ToolExecutorStub, "ListTools", request)
        owners = {n for t in reply.tools if t.name == "local_cache" for n in t.node_ids}
        if set(node_ids) <= owners:
            return
        time.sleep(0.1)
    raise TimeoutError("the mobile clients never showed up as tool owners")


def bench_browser(base_url: str, token: str, caller: Caller, calls: int, max_seconds: float,
                  baseline: float) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{base_url}/#token={token}")
            page.wait_for_function("() => window.llmlabWorker && window.llmlabWorker.state === 'paired'",
                                   timeout=15000)
            node_id = page.evaluate("window.llmlabWorker.nodeId")
            wait_for_row(caller.node, [node_id])
            samples = sequential(caller, [mobile_request(node_id)], calls, max_seconds)
            report("bridge → 1 Chromium page", samples, baseline, base_name="direct")
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="bridge task round trip vs a direct gRPC tool call")
    parser.add_argument("--calls", type=int, default=500, help="calls per series (default 500)")
    parser.add_argument("--clients", type=int, default=50, help="mobile clients of the large series (default 50)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time limit per series (default 30)")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium series")
    opts = parser.parse_args()
    calls = max(10, min(opts.calls, 100_000))
    clients = max(2, min(opts.clients, 200))

    secret = secrets.token_urlsafe(24)
    node: NodeProcess | None = None
    with tempfile.TemporaryDirectory() as home:
        try:
            node = spawn_node("bench-bridge", secret, "--roles", "bridge,tools", "--tools", "calculator",
                              "--no-mdns", env={"LLMLAB_HOME": home})
            base_url = next(line.split()[-1] for line in node.output if " dashboard " in line).removesuffix("/llmlab")
            with urllib.request.urlopen(f"{base_url}/api/pairing", timeout=10) as response:
                token = json.loads(response.read())["token"]
            caller = Caller(node)
            direct = tool_executor_pb2.ExecuteRequest(tool="calculator", arguments=to_struct({"expression": "25*67"}))
            baseline = report("direct gRPC Execute (calculator)",
                              sequential(caller, [direct], calls, opts.max_seconds))

            one = Mobiles(base_url, token, 1)
            try:
                wait_for_row(node, [c.node_id for c in one.clients])
                report("bridge → 1 ws client", sequential(caller, [mobile_request(one.clients[0].node_id)], calls,
                                                           opts.max_seconds), baseline, base_name="direct")
            finally:
                one.close()

            many = Mobiles(base_url, token, clients)
            try:
                ids = [c.node_id for c in many.clients]
                wait_for_row(node, ids)
                requests = [mobile_request(i) for i in ids]
                report(f"bridge → {clients} ws clients, 1 caller", sequential(caller, requests, calls,
                                                                             opts.max_seconds), baseline,
                       base_name="direct")
                samples, rate = concurrent(caller, [direct] * clients, calls, opts.max_seconds)
                loaded = report(f"direct gRPC Execute, {clients} callers", samples, baseline, base_name="direct",
                                extra=f"  throughput={rate:7.0f} calls/s")
                samples, rate = concurrent(caller, requests, calls, opts.max_seconds)
                bridged = report(f"bridge → {clients} ws clients, {clients} callers", samples, baseline,
                                 base_name="direct", extra=f"  throughput={rate:7.0f} calls/s")
                print(f"{'':<40} under {clients} callers: bridge median / direct median = "
                      f"{bridged / loaded:.1f}x", flush=True)
            finally:
                many.close()

            if not opts.no_browser and CHROMIUM.exists():
                bench_browser(base_url, token, caller, calls, opts.max_seconds, baseline)
        finally:
            if node is not None:
                node.stop(signal.SIGTERM, timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
