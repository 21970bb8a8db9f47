"""Chaos: rounds of random faults under a steady put/get load, and whether the mesh kept its word.

Three hosts on the LAN harness (``tests/lan/harness.py``: network namespaces, nftables;
needs root), one light node each (cache + replica, memory store, 1.5 s peer timeout,
anti-entropy every 2 s, W=2). Each round picks a fault at random: SIGKILL then a restart
with an empty cache, SIGSTOP longer than the peer timeout then SIGCONT, a 2|1 or a 1|1|1
partition, or 20% packet loss on every host. While the fault holds, one client puts, gets
and deletes through random nodes (bounded count and time); then the fault is healed and
the round waits until every node serves every acknowledged entry, no deleted or expired
one, and every entry is on 3 nodes (``tests/lan/nemesis.py``'s checker).

Prints: acknowledged writes and deletes, lost (goal 0), wrong reads (goal 0), time from
heal to full convergence (median, p99: heal until the mesh is whole again and every node
holds the same entries; each round is then verified by reading every key from every node),
and anti-entropy bytes per 1000 entries when
nothing differs (measured in this process: three replicators over loopback gRPC).

Run: sudo .venv/bin/python scripts/bench/chaos.py [--rounds 20] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc

from llmlab_grpc.cache import CacheManager
from llmlab_grpc.mesh.channels import ChannelPool
from llmlab_grpc.mesh.peers import PeerTable
from llmlab_grpc.proto.llmlab.v1 import cache_pb2, common_pb2, replica_pb2_grpc
from llmlab_grpc.replication import Replicator
from llmlab_grpc.replication.service import ReplicaService
from scripts.bench.stats import report
from tests.lan.harness import Lan, LanNode, LanRpcError, skip_reason
from tests.lan.nemesis import FAST_FLAGS, MODEL, Checker

FAULTS = ("kill", "pause", "partition 2|1", "partition 1|1|1", "loss 20%")
LOAD_S = 3.0
"""How long the load runs while a fault holds."""
LOAD_OPS = 300
"""Most operations per round."""


def live_nodes(lan: Lan) -> list[LanNode]:
    return [h.node for h in lan.hosts]


def inject(lan: Lan, fault: str, rng: random.Random) -> tuple[str, str]:
    """Start ``fault``; returns what to undo at heal time and the host a client cannot reach ("" if none)."""
    hosts = list(lan.hosts)
    rng.shuffle(hosts)
    if fault == "kill":
        hosts[0].node.kill()
        return f"restart {hosts[0].name}", hosts[0].name
    if fault == "pause":
        hosts[0].node.pause()
        return f"resume {hosts[0].name}", hosts[0].name
    if fault == "partition 2|1":
        lan.partition(hosts[:2], hosts[2:])
    elif fault == "partition 1|1|1":
        lan.partition(hosts[:1], hosts[1:])
        lan.partition(hosts[1:2], hosts[2:])
    else:
        for host in lan.hosts:
            host.loss(20)
    return "heal", ""


def heal(lan: Lan, undo: str, first: LanNode) -> None:
    lan.heal()
    if undo.startswith("restart"):
        host = next(h for h in lan.hosts if h.name == undo.split()[1])
        host.start(*FAST_FLAGS, "--peer", first.target if first.host is not host else lan.hosts[1].target)
    elif undo.startswith("resume"):
        next(h for h in lan.hosts if h.name == undo.split()[1]).node.resume()


def load(checker: Checker, lan: Lan, rng: random.Random, round_no: int, down: str) -> None:
    """Puts, gets and deletes through random reachable nodes for ``LOAD_S`` (at most ``LOAD_OPS``).

    The client talks to any node but the one that is down (a client fails over; the others
    may well be on the wrong side of a partition, which is the point).
    """
    deadline = time.monotonic() + LOAD_S
    for i in range(LOAD_OPS):
        if time.monotonic() > deadline:
            break
        candidates = [n for n in live_nodes(lan) if n.alive() and n.host.name != down]
        node = rng.choice(candidates)
        roll = rng.random()
        if roll < 0.5 or not checker.acked:
            checker.put(node, f"chaos r{round_no} w{i}", f"value r{round_no} w{i}", timeout=4)
        elif roll < 0.92:
            checker.read(node, rng.choice(list(checker.acked)))
        else:
            checker.delete(node, rng.choice(list(checker.acked)), timeout=4)


def entries(node: LanNode) -> int:
    try:
        return node.call("/llmlab.v1.Cache/Stats", cache_pb2.StatsRequest(), cache_pb2.StatsResponse).stats.entries
    except LanRpcError:
        return -1


def wait_same_holdings(lan: Lan, checker: Checker, limit_s: float = 120.0) -> float:
    """Seconds until every node holds the same number of entries, at least every acknowledged live one.

    A cheap signal (one ``Cache.Stats`` per node per poll): the full check that follows reads
    every key from every node and takes seconds itself, so timing convergence with it would
    measure the checker.
    """
    started = time.monotonic()
    floor = len([k for k in checker.acked if k not in checker.deleted])
    while time.monotonic() - started < limit_s:
        counts = {entries(n) for n in live_nodes(lan)}
        if len(counts) == 1 and counts.pop() >= floor:
            return time.monotonic() - started
        time.sleep(0.1)
    return time.monotonic() - started


def run_rounds(rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    with Lan(3, tag="cx") as lan:
        first = lan.hosts[0].start(*FAST_FLAGS)
        for host in lan.hosts[1:]:
            host.start(*FAST_FLAGS, "--peer", first.target)
        lan.wait_mesh(timeout=60)
        checker = Checker(lan)
        converge: list[float] = []
        faults: Counter[str] = Counter()
        lost_total = 0
        for r in range(rounds):
            fault = rng.choice(FAULTS)
            faults[fault] += 1
            undo, down = inject(lan, fault, rng)
            time.sleep(1.6)  # past the peer timeout: the fault is seen
            load(checker, lan, rng, r, down)
            healed = time.monotonic()
            heal(lan, undo, lan.hosts[0].node)
            lan.wait_mesh(timeout=60)
            same = wait_same_holdings(lan, checker)
            converge.append(time.monotonic() - healed)
            seconds = checker.wait_converged(live_nodes(lan), timeout=120)
            problems = checker.converged(live_nodes(lan))
            lost_total += len(problems.lost)
            print(f"round {r + 1:>2}: {fault:<16} healed -> converged {converge[-1]:6.2f} s "
                  f"(same holdings after {same:5.2f} s; full check of every key passed after {seconds:5.2f} s more)"
                  f"  acked so far {checker.counts['acked']}", flush=True)
        c = checker.counts
        print(f"\nfaults: {dict(faults)}")
        print(f"puts {c['puts']} (acknowledged {c['acked']}, short of W {c['partial']}, failed {c['failed']}), "
              f"deletes {c['deletes']} (acknowledged {len(checker.deleted)} still deleted), reads {c['reads']}")
        print(f"lost acknowledged entries: {lost_total} (goal 0)")
        print(f"wrong reads: {c['wrong_reads']} (goal 0)")
        report("heal -> full convergence", converge, unit="s", width=30)


async def anti_entropy_bytes(entries: int = 1000) -> None:
    """Digest bytes of one anti-entropy round over ``entries`` entries that nothing differs in."""
    nodes = []
    for name in ("ae-1", "ae-2", "ae-3"):
        manager = CacheManager(node_id=name)
        replicator = Replicator(manager, name, PeerTable(name), ChannelPool("bench-secret-xx"), replica_count=2,
                                retry_s=0.2, self_name=name, anti_entropy_s=3600)
        server = grpc.aio.server()
        replica_pb2_grpc.add_ReplicaServicer_to_server(ReplicaService(replicator), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        replicator.start()
        nodes.append((name, manager, replicator, server, f"127.0.0.1:{port}"))
    try:
        for name, _, replicator, _, _ in nodes:
            for other, _, _, _, address in nodes:
                if other != name:
                    replicator.peers.upsert(common_pb2.NodeInfo(node_id=other, name=other, address=address,
                                                                roles=["cache", "replica"]), "static")
        first = nodes[0]
        for i in range(entries):
            first[1].put(f"ae {i}", MODEL, f"answer {i} " * 20)
        limit = time.monotonic() + 60
        while any(len(m) < entries for _, m, _, _, _ in nodes) and time.monotonic() < limit:
            await asyncio.sleep(0.05)
        ae = first[2].anti_entropy
        before = dict(ae.counters)
        started = time.perf_counter()
        pushed = await ae.run_round()
        took = time.perf_counter() - started
        sent = ae.counters["digest_bytes"] - before["digest_bytes"]
        got = ae.counters["item_bytes"] - before["item_bytes"]
        started = time.perf_counter()
        await ae.run_round()  # the same membership again: rankings come from the cache
        again = time.perf_counter() - started
        peers = len(nodes) - 1
        print(f"\nanti-entropy, {entries} entries held by 3 nodes, nothing differs: one round from one node to "
              f"{peers} peers sent {sent} bytes of digests and got {got} bytes back "
              f"({(sent + got) / peers / entries * 1000:.0f} bytes per peer per 1000 entries), pushed {pushed}; "
              f"the round took {took * 1000:.0f} ms, the next one {again * 1000:.0f} ms")
    finally:
        for _, manager, replicator, server, _ in nodes:
            await replicator.stop()
            await server.stop(None)
            await replicator.channels.close()
            manager.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="fault rounds (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--entries", type=int, default=1000, help="entries for the anti-entropy bytes (default 1000)")
    opts = parser.parse_args()
    if not 1 <= opts.rounds <= 500 or not 1 <= opts.entries <= 100_000:
        parser.error("--rounds must be 1-500 and --entries 1-100000")
    asyncio.run(anti_entropy_bytes(opts.entries))
    reason = skip_reason()
    if reason:
        print(f"chaos rounds skipped: {reason}")
        return 0
    run_rounds(opts.rounds, opts.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
