"""Mesh figures on a LAN: five hosts (network namespaces on a bridge, each with a docker0 bridge
holding 172.17.0.1), nodes started with defaults, as users start them.

Prints median and p99 (and the ratio to the goal the issue names) for:
- the last host's ``listening`` line to a full mesh (every host lists every other alive), hosts
  booted one after another, and again with every node started at once (goal 3 s: exo
  announces every 2.5 s)
- a SIGTERM'd node leaving every other host's table  (goal 0.5 s)
- a SIGKILL'd node leaving every other host's table  (goal: peer timeout + one heartbeat = 4.5 s)

Needs root (namespaces, nftables), like the LAN tests. The LAN is built once; each trial boots
fresh node processes on it, one host after another. Every loop is bounded; every process is
stopped by PID; the namespaces are deleted at the end. Run: .venv/bin/python scripts/bench/lan.py
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.bench.stats import report
from tests.lan.harness import HEARTBEAT_S, PEER_TIMEOUT_S, Lan, LanNode, skip_reason


def gone_from_all(victim: LanNode, others: list[LanNode], limit_s: float) -> float:
    """Seconds from now until ``victim`` is in none of the ``others``' tables (polled every ~10 ms)."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if all(victim.name not in o.peer_states() for o in others):
            return time.monotonic() - start
        time.sleep(0.01)
    tables = {o.name: [(p.info.name, p.state, p.detail, p.info.address) for p in o.peers()] for o in others}
    raise TimeoutError(f"{victim.name} still listed after {limit_s} s: {tables}")


def full_mesh(nodes: list[LanNode], limit_s: float) -> float:
    start = time.monotonic()
    want = {n.name for n in nodes}
    while time.monotonic() - start < limit_s:
        if all(n.alive_peers() >= want - {n.name} for n in nodes):
            return time.monotonic() - start
        time.sleep(0.01)
    raise TimeoutError(f"no full mesh after {limit_s} s")


def concurrent(lan: Lan) -> float:
    """Every host's node started at once: seconds from the last ``listening`` line to a full mesh."""
    nodes = [h.start("--roles", "planner", wait=False) for h in lan.hosts]
    try:
        deadline = time.monotonic() + 120
        while not all(n.proc.listening.is_set() for n in nodes):
            if time.monotonic() > deadline:
                raise TimeoutError("nodes did not start")
            time.sleep(0.005)
        last_listening = time.monotonic()
        full_mesh(nodes, 60)
        return time.monotonic() - last_listening
    finally:
        for node in nodes:
            node.stop(timeout=10)


def trial(lan: Lan) -> tuple[float, float, float]:
    nodes = [h.start("--roles", "planner") for h in lan.hosts]  # one after another
    last_listening = time.monotonic()  # start() returns as the last node's "listening" line is read
    try:
        full_mesh(nodes, 60)
        formed = time.monotonic() - last_listening
        nodes[-1].signal(signal.SIGTERM)
        sigterm = gone_from_all(nodes[-1], nodes[:-2], 30)
        nodes[-2].signal(signal.SIGKILL)
        sigkill = gone_from_all(nodes[-2], nodes[:-2], 30)
        return formed, sigterm, sigkill
    finally:
        for node in nodes:
            node.stop(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description="LAN mesh figures (needs root)")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--hosts", type=int, default=5)
    opts = parser.parse_args()
    reason = skip_reason()
    if reason:
        print(f"lan.py: {reason}", file=sys.stderr)
        return 2
    formed, together, sigterm, sigkill = [], [], [], []
    with Lan(opts.hosts, docker0=True, tag="b") as lan:
        for i in range(max(1, opts.trials)):
            f, t, k = trial(lan)
            c = concurrent(lan)
            print(f"trial {i + 1}: full mesh {f:.3f} s (all at once {c:.3f} s), SIGTERM gone {t:.3f} s, "
                  f"SIGKILL gone {k:.3f} s", flush=True)
            formed.append(f)
            together.append(c)
            sigterm.append(t)
            sigkill.append(k)
    goal_kill = PEER_TIMEOUT_S + HEARTBEAT_S
    report(f"last listening -> full mesh ({opts.hosts} hosts)", formed, 3.0, base_name="goal", unit="s", width=42,
           extra="  (goal 3 s; hosts booted one after another)")
    report("  the same, every node started at once", together, 3.0, base_name="goal", unit="s", width=42,
           extra="  (goal 3 s)")
    report("SIGTERM: gone from every table", sigterm, 0.5, base_name="goal", unit="s", width=42,
           extra="  (goal 0.5 s)")
    report("SIGKILL: gone from every table", sigkill, goal_kill, base_name="goal", unit="s", width=42,
           extra=f"  (goal {goal_kill:g} s = peer timeout + one heartbeat)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
