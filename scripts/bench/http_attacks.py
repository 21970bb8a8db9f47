"""HTTP attacks on a bridge node (issue 16), for ``scripts/bench/abuse.py`` and on their own.

Each attack is a function ``attack(target, budget_s) -> dict`` that runs a bounded number
of hostile requests against one bridge's HTTP port and returns what the server did
(counts by outcome). The measuring (``Node.ListPeers`` p99 while it runs, the node's RSS
before and after) is the caller's: ``abuse.py``, or ``main`` here, which starts one
bridge node, runs every attack with a prober calling ``ListPeers`` every 10 ms, and prints
one line per attack with the baseline (the prober with no attack) first. The attack runs
in its own process, so the prober measures the node, not the attacker's share of the GIL.

- ``slowloris``: 200 sockets send request headers one line a second and never finish;
  the server must close them all (header deadline, ``--http-header-timeout``).
- ``nested_json``: 200 ``/v1`` bodies nested 100,000 deep; each must be a 400 with a JSON
  error (never a plain-text 500 from a RecursionError).
- ``borrowed_host``: 500 loopback requests for ``/api/pairing`` naming an allowed origin's
  host (what a reverse proxy on the same machine sends); each must be a 401.
- ``connection_flood``: ``--http-max-connections`` + 100 idle sockets; those over the cap
  must be closed at once, and the port must serve again when they go.

Run: .venv/bin/python scripts/bench/http_attacks.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import secrets
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc

from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.procs import NodeProcess, spawn_node
from llmlab_grpc.proto.llmlab.v1 import node_pb2, node_pb2_grpc
from scripts.bench.stats import report

PROXY_HOST = "bridge.example.com:8443"
SLOWLORIS_SOCKETS = 200
NESTED_REQUESTS = 200
NESTED_DEPTH = 100_000
BORROWED_REQUESTS = 500
FLOOD_EXTRA = 100


@dataclass(frozen=True)
class Target:
    """One bridge: its base URL, HTTP port, mesh secret and connection cap."""

    url: str
    secret: str
    max_connections: int = 512

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def _status(url: str, headers: dict[str, str], data: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("content-type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("content-type", "")
    except OSError as exc:
        return 0, type(exc).__name__


def slowloris(target: Target, budget_s: float) -> dict[str, Any]:
    socks: list[socket.socket] = []
    opened_at: dict[int, float] = {}
    closed_after: list[float] = []
    for _ in range(SLOWLORIS_SOCKETS):
        try:
            sock = socket.create_connection(("127.0.0.1", target.port), timeout=5)
        except OSError:
            break
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.setblocking(False)
        socks.append(sock)
        opened_at[sock.fileno()] = time.monotonic()
    deadline = time.monotonic() + budget_s
    open_ = list(socks)
    while open_ and time.monotonic() < deadline:
        time.sleep(1.0)
        still = []
        for sock in open_:
            try:
                if sock.recv(4096) == b"":
                    raise ConnectionResetError
                still.append(sock)  # answered something: count it as open
            except BlockingIOError:
                try:
                    sock.send(b"X-Slow: a\r\n")
                    still.append(sock)
                except OSError:
                    closed_after.append(time.monotonic() - opened_at[sock.fileno()])
            except OSError:
                closed_after.append(time.monotonic() - opened_at[sock.fileno()])
        open_ = still
    for sock in socks:
        sock.close()
    closed_after.sort()
    return {"sockets": len(socks), "closed_by_server": len(closed_after), "still_open": len(open_),
            "median_s_to_close": round(closed_after[len(closed_after) // 2], 2) if closed_after else None}


def nested_json(target: Target, budget_s: float) -> dict[str, Any]:
    body = (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": '
            + b"[" * NESTED_DEPTH + b"]" * NESTED_DEPTH + b"}")
    headers = {"Authorization": f"Bearer {target.secret}", "Content-Type": "application/json"}
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + budget_s
    for _ in range(NESTED_REQUESTS):
        if time.monotonic() > deadline:
            break
        status, kind = _status(f"{target.url}/v1/chat/completions", headers, body)
        outcomes[f"{status} {kind.split(';')[0]}"] += 1
    return dict(outcomes)


def borrowed_host(target: Target, budget_s: float) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + budget_s
    for _ in range(BORROWED_REQUESTS):
        if time.monotonic() > deadline:
            break
        outcomes[str(_status(f"{target.url}/api/pairing", {"Host": PROXY_HOST})[0])] += 1
    return dict(outcomes)


def connection_flood(target: Target, budget_s: float) -> dict[str, Any]:
    socks: list[socket.socket] = []
    try:
        for _ in range(target.max_connections + FLOOD_EXTRA):
            try:
                socks.append(socket.create_connection(("127.0.0.1", target.port), timeout=5))
            except OSError:
                break
        time.sleep(min(1.0, budget_s))
        closed = 0
        for sock in socks:
            sock.setblocking(False)
            try:
                closed += sock.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
    finally:
        for sock in socks:
            sock.close()
    served = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not served:
        served = int(_status(f"{target.url}/healthz", {})[0] == 200)
        time.sleep(0.05)
    return {"sockets": len(socks), "closed_at_once": closed, "serves_afterwards": bool(served)}


ATTACKS: dict[str, Callable[[Target, float], dict[str, Any]]] = {
    "slowloris": slowloris,
    "nested_json": nested_json,
    "borrowed_host": borrowed_host,
    "connection_flood": connection_flood,
}
"""Name → attack; each bounded in requests and in ``budget_s`` seconds."""


# -- standalone run --------------------------------------------------------------------------------------------

def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Prober:
    """Calls ``Node.ListPeers`` every ``interval_s`` in a thread; ``samples`` are seconds per call."""

    def __init__(self, address: str, secret: str, interval_s: float = 0.01) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = node_pb2_grpc.NodeStub(self.channel)
        self.metadata = bearer(secret)
        self.interval_s = interval_s
        self.samples: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                self.stub.ListPeers(node_pb2.ListPeersRequest(), metadata=self.metadata, timeout=5)
                self.samples.append(time.perf_counter() - started)
            except grpc.RpcError:
                self.failures += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.channel.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per attack at most (default 20)")
    parser.add_argument("--header-timeout", type=float, default=10.0, help="the node's --http-header-timeout")
    parser.add_argument("--max-connections", type=int, default=512, help="the node's --http-max-connections")
    parser.add_argument("--only", action="append", choices=sorted(ATTACKS), help="run only this attack (repeatable)")
    args = parser.parse_args()
    secret = secrets.token_urlsafe(24)
    node: NodeProcess = spawn_node("abuse-http", secret, "--roles", "bridge", "--no-mdns",
                                   "--bridge-origin", f"https://{PROXY_HOST}",
                                   "--http-header-timeout", str(args.header_timeout),
                                   "--http-max-connections", str(args.max_connections))
    try:
        url = next(line.split()[-1] for line in node.output if " dashboard " in line).removesuffix("/llmlab")
        target = Target(url, secret, args.max_connections)
        with Prober(node.address, secret) as idle:
            time.sleep(3)
        baseline = report("ListPeers, no attack", idle.samples, width=34)
        for name, attack in ATTACKS.items():
            if args.only and name not in args.only:
                continue
            before = rss_bytes(node.process.pid)
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as attacker:
                warm = attacker.submit(time.sleep, 0)  # the child process starts before the measurement
                warm.result()
                with Prober(node.address, secret) as probe:
                    outcome = attacker.submit(attack, target, args.budget).result()
            after = rss_bytes(node.process.pid)
            extra = (f"  failed={probe.failures}  rss {before / 2**20:.0f}->{after / 2**20:.0f} MiB  "
                     f"{json.dumps(outcome)}")
            report(f"ListPeers during {name}", probe.samples or [0.0], baseline, base_name="idle", width=34,
                   extra=extra)
    finally:
        with contextlib.suppress(Exception):
            node.stop(signal.SIGTERM, timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
