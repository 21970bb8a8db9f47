"""Replication, step by step: kill the node an answer was cached on, and still get the answer.

What it does, narrating each step (every node is a real `llmlab node` process on 127.0.0.1):

1. starts three nodes with the cache, replica and planner roles (no llm node at all);
2. caches an answer through node 1, named exactly as the planner names the question;
3. shows it is on node 1 (primary) and on exactly the two other nodes (replicas);
4. kills node 1 with SIGKILL;
5. asks the planner of node 2 the same question: a cache hit, answered from a copy;
6. shows that a survivor took the entry over, one replica short of N=2;
7. starts a fourth node: repair brings the entry back to a primary plus two replicas.

Nodes are stopped by PID at the end (logs stay in a temporary folder it prints).
Run: .venv/bin/python scripts/replication_demo.py [--store memory|ray]
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from llmlab_grpc.planner.planner import effective_params
from llmlab_grpc.procs import NodeProcess, spawn_node
from llmlab_grpc.proto.llmlab.v1 import (
    cache_pb2,
    cache_pb2_grpc,
    planner_pb2,
    planner_pb2_grpc,
    replica_pb2,
    replica_pb2_grpc,
)

MODEL = "smollm2-135m"
QUESTION = "Tell me a joke about backups"
ANSWER = "I would tell you a joke about backups, but I keep two copies of the punchline elsewhere."
FAST = ["--no-mdns", "--heartbeat-interval", "0.3", "--peer-timeout", "1.5", "--replication-retry", "0.5"]


def say(text: str) -> None:
    print(text, flush=True)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check`` (bounded by ``timeout``) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except grpc.RpcError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"replication demo: gave up waiting for {what} after {timeout:.0f} s")


def locate(node: NodeProcess, key: str) -> replica_pb2.LocateResponse:
    return node.call(replica_pb2_grpc.ReplicaStub, "Locate", replica_pb2.LocateRequest(key=key))


def holders(reply: replica_pb2.LocateResponse) -> list[str]:
    return ([reply.primary.name] if reply.HasField("primary") else []) + [r.name for r in reply.replicas]


def shortfall(node: NodeProcess) -> int:
    return node.call(cache_pb2_grpc.CacheStub, "Stats", cache_pb2.StatsRequest()).stats.replication_shortfall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["memory", "ray"], default="memory",
                        help="cache store of the nodes (ray: one local Ray cluster that every node joins)")
    opts = parser.parse_args()
    secret = secrets.token_urlsafe(24)
    logs = Path(tempfile.mkdtemp(prefix="llmlab-replication-demo-"))
    store = ["--cache-store", opts.store]
    if opts.store == "ray":
        from llmlab_grpc.ray_runtime import ensure_ray

        say("Starting a local Ray cluster the nodes join (their cache values live in its object store)...")
        store += ["--ray-address", ensure_ray(num_cpus=2).get_runtime_context().gcs_address]
    nodes: list[NodeProcess] = []

    def node(name: str, roles: str, *seeds: NodeProcess) -> NodeProcess:
        peers = [a for s in seeds for a in ("--peer", s.address)]
        started = spawn_node(name, secret, "--roles", roles, *FAST, *store, *peers, log_dir=logs)
        nodes.append(started)
        say(f"  {name} listening on {started.address} (pid {started.pid}, roles {roles})")
        return started

    try:
        say("1. Three nodes with the cache, replica and planner roles; no llm node anywhere.")
        n1 = node("node-1", "cache,replica,planner")
        n2 = node("node-2", "cache,replica,planner", n1)
        n3 = node("node-3", "cache,replica,planner", n1)
        wait_for("the three nodes to see each other",
                 lambda: all(len(n.peer_names()) == 2 for n in (n1, n2, n3)))

        say(f"\n2. Cache an answer through node-1 for the question {QUESTION!r} (model {MODEL},")
        params = effective_params(planner_pb2.Query(text=QUESTION))
        say(f"   with the planner's default params: temperature {params.temperature:.1f}, seed {params.seed}).")
        lookup = cache_pb2.CacheLookup(prompt=QUESTION, model=MODEL, params=params)
        key = n1.call(cache_pb2_grpc.CacheStub, "Put", cache_pb2.PutRequest(lookup=lookup, response=ANSWER)).key
        say(f"   key {key}")

        say("\n3. Where is it? Replica.Locate asks every replica node for a verified copy:")
        found = wait_for("two replicas", lambda: (r := locate(n2, key)) and len(r.replicas) == 2 and r)
        say(f"   primary {found.primary.name}; replicas {', '.join(r.name for r in found.replicas)}")
        say(f"   The same from the command line: llmlab cache locate --prompt {QUESTION!r} --model {MODEL}")
        cli = subprocess.run([sys.executable, "-m", "llmlab_grpc", "cache", "locate", "--prompt", QUESTION,
                              "--model", MODEL, "--target", n2.address], capture_output=True, text=True,
                             env={**os.environ, "LLMLAB_MESH_SECRET": secret}, timeout=60)
        say("   " + (cli.stdout or cli.stderr).strip().replace("\n", "\n   "))

        say(f"\n4. SIGKILL node-1 (pid {n1.pid}): no goodbye, the others notice missed heartbeats.")
        n1.stop(signal.SIGKILL)
        wait_for("the survivors to drop node-1", lambda: all("node-1" not in n.peer_names() for n in (n2, n3)))
        say("   node-2 and node-3 dropped node-1 from their peer tables.")

        say(f"\n5. Ask node-2's planner {QUESTION!r}:")
        query = planner_pb2.Query(text=QUESTION, model=MODEL)
        task = n2.call(planner_pb2_grpc.PlannerStub, "Ask", planner_pb2.AskRequest(query=query), timeout=30).task
        step = task.steps[-1]
        outcome = planner_pb2.CacheOutcome.Name(step.cache).removeprefix("CACHE_OUTCOME_").lower()
        say(f"   answer: {task.answer}")
        say(f"   cache {outcome}, from {step.node_name or step.node_id}; no model was needed (none is running).")
        if task.answer != ANSWER or step.cache != planner_pb2.CACHE_OUTCOME_HIT:
            raise SystemExit("replication demo: the planner did not answer from the cache")

        say("\n6. A survivor takes the entry over as its new primary; with one other node it has one of N=2")
        after = wait_for("the takeover", lambda: (r := locate(n3, key)) and r.HasField("primary") and r)
        say(f"   replicas: primary {after.primary.name}; replicas {', '.join(holders(after)[1:]) or 'none'}; "
            f"shortfall {shortfall(n2) + shortfall(n3)} (visible in `llmlab cache stats --json`).")

        say("\n7. Start node-4: the primary syncs it the entries it should hold (repair back to N=2).")
        n4 = node("node-4", "cache,replica", n2)
        repaired = wait_for("repair", lambda: (r := locate(n4, key)) and len(holders(r)) == 3 and r)
        say(f"   primary {repaired.primary.name}; replicas {', '.join(r.name for r in repaired.replicas)}")
        wait_for("the shortfall to clear", lambda: shortfall(n2) + shortfall(n3) + shortfall(n4) == 0)
        say("   shortfall 0: every entry is on a primary and two replicas again.")
        say("\nDone.")
        return 0
    finally:
        for started in nodes:
            started.stop(signal.SIGTERM, timeout=10)
        say(f"(nodes stopped by PID; their logs are in {logs})")


if __name__ == "__main__":
    sys.exit(main())
