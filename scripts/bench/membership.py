"""Membership figures of the mesh foundation, measured on this machine.

Prints median and p99 (and the ratio to the figure the issue names) for:
- `llmlab up --nodes 3 --no-mdns` until `ready`      (named figure: 30 s)
- a SIGTERM'd peer leaving another node's table       (named figure: 2 s)
- a SIGKILL'd peer leaving another node's table       (named figure: 6 s)
- two nodes finding each other by zeroconf on 127.0.0.1 (about 2 s when first measured)

Every loop is bounded; every process is stopped by PID. Run: .venv/bin/python scripts/bench/membership.py
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llmlab_grpc.procs import NodeProcess, spawn_node
from scripts.bench.stats import report


def poll(predicate: Callable[[], bool], limit_s: float) -> float:
    """Seconds until ``predicate`` holds (checked every 20 ms), or raise after ``limit_s``."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    raise TimeoutError(f"not within {limit_s} s")


def report_named(label: str, samples: list[float], named: float) -> None:
    """One line of figures against the figure the issue names (a constant, not measured here)."""
    report(label, samples, named, base_name="named", unit="s", width=34, extra=f"  (named figure {named:g} s)")


def bench_up(trials: int) -> list[float]:
    samples = []
    for _ in range(trials):
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "LLMLAB_HOME": home, "LLMLAB_MESH_SECRET": ""}
            start = time.monotonic()
            up = subprocess.Popen([sys.executable, "-m", "llmlab_grpc", "up", "--nodes", "3", "--no-mdns"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
            assert up.stdout is not None
            for line in up.stdout:
                if line.strip() == "ready":
                    samples.append(time.monotonic() - start)
                    break
            up.send_signal(signal.SIGTERM)
            up.wait(timeout=60)
    return samples


def bench_departure(sig: int, trials: int) -> list[float]:
    samples = []
    secret = secrets.token_urlsafe(24)
    stay = spawn_node("bench-stay", secret, "--no-mdns")
    try:
        for i in range(trials):
            leaver: NodeProcess = spawn_node(f"bench-leave-{i}", secret, "--no-mdns", "--peer", stay.address)
            poll(lambda n=leaver: n.name in stay.peer_names(), 20)
            leaver.send_signal(sig)
            samples.append(poll(lambda n=leaver: n.name not in stay.peer_names(), 30))
            leaver.stop(signal.SIGKILL)
    finally:
        stay.stop()
    return samples


def bench_zeroconf(trials: int) -> list[float]:
    samples = []
    for i in range(trials):
        secret = secrets.token_urlsafe(24)
        a = spawn_node(f"zc-a{i}", secret, "--mdns-interface", "127.0.0.1")
        start = time.monotonic()
        b = spawn_node(f"zc-b{i}", secret, "--mdns-interface", "127.0.0.1")
        try:
            poll(lambda a=a, b=b: b.name in a.peer_names() and a.name in b.peer_names(), 30)
            samples.append(time.monotonic() - start)
        finally:
            a.stop()
            b.stop()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description="membership figures")
    parser.add_argument("--trials", type=int, default=5)
    opts = parser.parse_args()
    report_named("llmlab up --nodes 3 to ready", bench_up(max(1, opts.trials // 2)), 30.0)
    report_named("SIGTERM peer leaves a table", bench_departure(signal.SIGTERM, opts.trials), 2.0)
    report_named("SIGKILL peer leaves a table", bench_departure(signal.SIGKILL, opts.trials), 6.0)
    report_named("zeroconf discovery on loopback", bench_zeroconf(max(1, opts.trials // 2)), 2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
