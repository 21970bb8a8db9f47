"""Replication figures, measured on this machine in one run.

The primary is a real node (``LlmlabNode`` with the cache and replica roles) running in
this process, so the bench can time its ``CacheManager`` and ``Replicator`` directly;
its three peers are `llmlab node` processes on 127.0.0.1 (memory store, so Ray start-up
is not what is measured). Prints:

- Cache.Put over gRPC on loopback, W=1 (``--write-acks 1``: the put returns with the local
  copy, replication follows: the behaviour before W) vs W=2 (the default: it returns once a
  replica verified its copy)                                  p50, p99 and the ratio
- local put: ``CacheManager.put`` on the primary, nothing else    (the baseline)
- replicated put: the same put, then ``Replicator.replicate`` until N=2 peer processes
  acknowledged their copy over gRPC (``Replica.Store``)        p50, p99 and the ratio
- repair: SIGKILL of a peer that holds a copy of each of ``--entries`` (default 1000)
  entries, until every one of them has N live replicas again: the time to notice
  (peer timeout) and the time to re-replicate, and the total
- entries lost: entries with no copy anywhere after the repair (must be 0), and entries
  still short of N replicas (must be 0)

Every loop is bounded by a count and a time limit; every process is stopped by PID.
Run: .venv/bin/python scripts/bench/replication.py [--puts 500] [--entries 1000]
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

from llmlab_grpc.cache import cache_key
from llmlab_grpc.config import NodeSettings
from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.node import LlmlabNode
from llmlab_grpc.procs import NodeProcess, spawn_node
from llmlab_grpc.proto.llmlab.v1 import cache_pb2, cache_pb2_grpc, replica_pb2, replica_pb2_grpc
from llmlab_grpc.replication import Replicator, place
from scripts.bench.stats import report

MODEL = "smollm2-135m"
HEARTBEAT_S, PEER_TIMEOUT_S = 0.3, 1.5
TIME_LIMIT_S = 60.0
PUT_BLOCK = 50
"""Puts one writer makes in a row before the other writer's turn."""
PUT_WARMUP = 20
"""Puts per writer not counted: they warm the channels up."""


async def until(predicate: Callable[[], bool], what: str, limit_s: float = TIME_LIMIT_S) -> float:
    """Seconds until ``predicate`` holds (checked every 5 ms); SystemExit after ``limit_s``."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        if predicate():
            return time.perf_counter() - start
        await asyncio.sleep(0.005)
    raise SystemExit(f"replication bench: {what} did not happen within {limit_s:.0f} s")


async def bench_puts(node: LlmlabNode, replicator: Replicator, n: int) -> None:
    manager = replicator.manager
    manager.remove_listener(replicator)  # time the puts alone; replicate() below is awaited explicitly
    try:
        local = []
        for i in range(n):
            start = time.perf_counter()
            manager.put(f"local put {i}", MODEL, f"answer {i} " * 20)
            local.append(time.perf_counter() - start)
        replicated = []
        deadline = time.monotonic() + TIME_LIMIT_S
        for i in range(n):
            if time.monotonic() > deadline:
                break
            start = time.perf_counter()
            entry = manager.put(f"replicated put {i}", MODEL, f"answer {i} " * 20)
            acked = await replicator.replicate(entry.key, entry)
            replicated.append(time.perf_counter() - start)
            if len(acked) < replicator.replica_count:
                raise SystemExit(f"replication bench: only {len(acked)} replicas acknowledged")
    finally:
        manager.add_listener(replicator)
        manager.clear()
    print(f"puts of a {len('answer 0 ' * 20)}-byte answer; replicated = acknowledged by N={replicator.replica_count} "
          f"peer processes over gRPC", flush=True)
    base = report("local put (CacheManager.put)", local, unit="us", width=46)
    report("replicated put (put + Replica.Store x N)", replicated, base, base_name="local", unit="us", width=46)


def grpc_puts(w1: NodeProcess, w2: NodeProcess, n: int) -> None:
    """``Cache.Put`` from this process to a W=1 and a W=2 node, in alternating blocks.

    Within a block one client puts in sequence, as a user would, so each put overlaps only
    its own node's replication of the put before it (W=1 leaves both copies to the
    background, W=2 the second one). Alternating puts one by one would instead make each W=2
    put share the cores with the W=1 node's background copies of the put just before.
    Blocks alternate so that both kinds see the same drift in the machine's load.
    """
    samples: dict[str, list[float]] = {"w1": [], "w2": []}
    deadline = time.monotonic() + TIME_LIMIT_S
    with w1.channel() as c1, w2.channel() as c2:
        stubs = {"w1": (cache_pb2_grpc.CacheStub(c1), w1), "w2": (cache_pb2_grpc.CacheStub(c2), w2)}
        short = 0
        for start_i in range(0, n + PUT_WARMUP, PUT_BLOCK):
            for name, (stub, proc) in stubs.items():
                for i in range(start_i, min(start_i + PUT_BLOCK, n + PUT_WARMUP)):
                    if time.monotonic() > deadline:
                        break
                    request = cache_pb2.PutRequest(lookup=cache_pb2.CacheLookup(prompt=f"{name} put {i}", model=MODEL),
                                                   response=f"answer {i} " * 20)
                    start = time.perf_counter()
                    reply = stub.Put(request, metadata=bearer(proc.secret), timeout=10)
                    if i >= PUT_WARMUP:  # the first puts warm the channels up and are not counted
                        samples[name].append(time.perf_counter() - start)
                    short += reply.copies < reply.write_acks
    print(f"\nCache.Put over gRPC on loopback ({len('answer 0 ' * 20)}-byte answer; N=2; "
          f"{short} puts short of W)", flush=True)
    base = report("Cache.Put, W=1 (returns with the local copy)", samples["w1"], unit="ms", width=46)
    report("Cache.Put, W=2 (returns at the 1st replica ack)", samples["w2"], base, base_name="W=1", unit="ms",
           width=46)


def held_by(peer: NodeProcess, keys: list[str]) -> set[str]:
    """The ``keys`` ``peer`` holds a live copy of (one Fetch per key over one channel)."""
    with peer.channel() as channel:
        stub = replica_pb2_grpc.ReplicaStub(channel)
        metadata = [("authorization", f"Bearer {peer.secret}")]
        return {k for k in keys if stub.Fetch(replica_pb2.FetchRequest(key=k), metadata=metadata, timeout=10).found}


async def bench_repair(node: LlmlabNode, replicator: Replicator, peers: list[NodeProcess], entries: int) -> None:
    victim, survivors = peers[0], peers[1:]
    ids = [p.name for p in peers]
    manager = replicator.manager
    keys: list[str] = []
    i = 0
    while len(keys) < entries:  # only entries the victim is placed on: each of them needs repair
        prompt = f"repair me {i}"
        i += 1
        if victim.name in place(cache_key(prompt, MODEL), ids, replicator.replica_count):
            keys.append(manager.put(prompt, MODEL, f"answer {i} " * 20).key)
    await until(lambda: replicator.shortfall() == 0 and len(replicator.queue) == 0,
                f"the replication of {entries} entries", limit_s=120)
    holding = [k for k in keys if victim.name in replicator.get_replicas(k)]
    print(f"\nrepair: {victim.name} holds a copy of {len(holding)} entries; SIGKILL it "
          f"(heartbeat {HEARTBEAT_S} s, peer timeout {PEER_TIMEOUT_S} s)", flush=True)

    killed = time.perf_counter()
    victim.stop(signal.SIGKILL)
    noticed = await until(lambda: node.peers.get(victim.name) is None, "noticing the departure")
    repaired = await until(
        lambda: all(len(replicator.get_replicas(k)) >= replicator.replica_count for k in keys),
        "the repair", limit_s=120)
    total = time.perf_counter() - killed
    print(f"{'noticed (peer timeout)':<46} {noticed:9.3f} s", flush=True)
    print(f"{'re-replicated after noticing':<46} {repaired:9.3f} s  ({len(keys) / max(repaired, 1e-9):.0f} entries/s)",
          flush=True)
    print(f"{'repair time, SIGKILL to N replicas again':<46} {total:9.3f} s", flush=True)

    held = await asyncio.gather(*(asyncio.to_thread(held_by, p, keys) for p in survivors))
    on_primary = {k for k in keys if manager.get_entry(k) is not None}
    lost = sum(1 for k in keys if k not in on_primary and not any(k in h for h in held))
    short = sum(1 for k in keys if len(replicator.get_replicas(k)) < replicator.replica_count)
    print(f"copies: primary {len(on_primary)}/{len(keys)}, " +
          ", ".join(f"{p.name} {len(h)}/{len(keys)}" for p, h in zip(survivors, held, strict=True)), flush=True)
    print(f"entries lost: {lost}", flush=True)
    print(f"entries short of N={replicator.replica_count} replicas after the repair: {short}", flush=True)
    if lost or short:
        raise SystemExit(1)


async def run(opts: argparse.Namespace) -> None:
    secret = secrets.token_urlsafe(24)
    logs = Path(tempfile.mkdtemp(prefix="llmlab-bench-replication-"))
    flags = ["--roles", "cache,replica", "--no-mdns", "--cache-store", "memory",
             "--heartbeat-interval", str(HEARTBEAT_S), "--peer-timeout", str(PEER_TIMEOUT_S)]
    peers: list[NodeProcess] = []
    node: LlmlabNode | None = None
    try:
        # First Cache.Put with W=1 and W=2 among processes only: a replica living in this
        # process would share the GIL with the client thread and slow W=2's replies.
        peers.append(await asyncio.to_thread(spawn_node, "bench-a", secret, *flags, log_dir=logs))
        for name in ("bench-b", "bench-c"):
            peers.append(await asyncio.to_thread(spawn_node, name, secret, *flags, "--peer", peers[0].address,
                                                 log_dir=logs))
        writers = [await asyncio.to_thread(spawn_node, name, secret, *flags, "--write-acks", acks, "--peer",
                                           peers[0].address, log_dir=logs)
                   for name, acks in (("bench-w1", "1"), ("bench-w2", "2"))]
        peers.extend(writers)
        await until(lambda: all(len(w.peer_names()) == 4 for w in writers), "the writers to see the mesh")
        await asyncio.to_thread(grpc_puts, *writers, opts.puts)
        for writer in writers:
            writer.stop(signal.SIGTERM, timeout=10)
        peers = peers[:3]

        settings = NodeSettings(name="bench-primary", roles=["cache", "replica"], host="127.0.0.1", port=0,
                                mesh_secret=secret, mdns=False, cache_store="memory", peers=[peers[0].address],
                                heartbeat_interval_s=HEARTBEAT_S, peer_timeout_s=PEER_TIMEOUT_S,
                                replication_retry_s=0.5, replication_queue=max(1024, opts.entries))
        node = LlmlabNode(settings)
        await node.start()
        await until(lambda: len(node.peers) == 3, "the peers to join")
        replicator: Replicator = node.components["replica"].replicator  # type: ignore[attr-defined]
        await bench_puts(node, replicator, opts.puts)
        await bench_repair(node, replicator, peers, opts.entries)
    finally:
        for peer in peers:
            peer.stop(signal.SIGTERM, timeout=10)
        if node is not None:
            await node.stop()
        print(f"(peer processes stopped by PID; logs in {logs})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=500, help="puts timed per kind (default 500)")
    parser.add_argument("--entries", type=int, default=1000, help="entries the killed node holds (default 1000)")
    opts = parser.parse_args()
    if not 1 <= opts.puts <= 100_000 or not 1 <= opts.entries <= 100_000:
        parser.error("--puts and --entries must be between 1 and 100000")
    asyncio.run(run(opts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
