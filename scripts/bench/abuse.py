"""Node responsiveness and memory while hostile requests run (issue 16).

Starts two real nodes on 127.0.0.1 (memory cache store, ``--cache-max-bytes 1 MiB``): a target
with the planner, tools, cache, replica and bridge roles, and a replica peer. For each attack
it measures ``Node.ListPeers`` on the target every 10 ms (median, p99 and the ratio to the same
probe with no attack, measured first in the same run) and the RSS of both nodes before and
after. Goal: p99 under 50 ms during every attack, RSS growth within the configured budgets
(the cache's 1 MiB, the planner's task store).

Attacks are plain functions ``attack(target, budget_s) -> dict`` (what the node answered, by
outcome), bounded in requests and in ``budget_s`` seconds, each run in a process of its own
so the probe measures the node, not the attacker's share of the GIL. ``ATTACKS`` lists them:
the gRPC attacks here, then the HTTP ones of ``scripts/bench/http_attacks.py`` (slowloris,
nested JSON, borrowed Host, connection flood). To add one, write the function and append it.

- ``redos``: Planner.Ask with the issue's ReDoS text, "search a" + spaces + "b" at the
  32,000-character limit (once 17 s of frozen loop at 2,409 characters).
- ``cache_prompts``: 400 Cache.Put of 1 MiB prompts, then 400 of 100 KiB (the issue's 403
  puts grew RSS by ~448 MB with a 1 MiB budget).
- ``tools_json``: Cache.Put with a 15 MB ``tools_json`` (once accepted) and with one nested
  100,000 deep (once UNKNOWN).
- ``task_turns``: 20 asks of 64 turns x 240 KB (once +316 MB and a broken ListTasks), then 20 of
  64 x 60 KB (under the query limit), then ListTasks pages.
- ``forged_replica``: Replica.Store of a self-consistent forgery over an honest copy, 200 times.
- ``ttl``: Cache.Put with ``ttl_ms=2^62``.

Run: .venv/bin/python scripts/bench/abuse.py [--only NAME] [--budget S]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc

from llmlab_grpc.cache import cache_key
from llmlab_grpc.cache.keys import checksum
from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.mesh.channels import CHANNEL_OPTIONS
from llmlab_grpc.procs import NodeProcess, spawn_node
from llmlab_grpc.proto.llmlab.v1 import (
    cache_pb2,
    cache_pb2_grpc,
    common_pb2,
    planner_pb2,
    planner_pb2_grpc,
    replica_pb2,
    replica_pb2_grpc,
)
from scripts.bench import http_attacks
from scripts.bench.http_attacks import Prober, rss_bytes
from scripts.bench.stats import report

MiB = 1024 * 1024
CACHE_BUDGET = MiB
GOAL_P99_S = 0.050


@dataclass(frozen=True)
class Target:
    """The node under attack: gRPC address, HTTP base URL, mesh secret, and the replica peer's id."""

    address: str
    url: str
    secret: str
    replica_id: str = ""


def _stub(target: Target, stub_cls: type) -> tuple[Any, grpc.Channel]:
    channel = grpc.insecure_channel(target.address, options=CHANNEL_OPTIONS)
    return stub_cls(channel), channel


def _code(call: Callable[[], Any]) -> str:
    try:
        call()
        return "OK"
    except grpc.RpcError as err:
        return err.code().name


def redos(target: Target, budget_s: float) -> dict[str, Any]:
    stub, channel = _stub(target, planner_pb2_grpc.PlannerStub)
    text = "search a" + " " * (32_000 - len("search ab")) + "b"
    deadline = time.monotonic() + budget_s
    outcomes: Counter[str] = Counter()

    def ask(_: int) -> str:
        if time.monotonic() > deadline:
            return "skipped"
        query = planner_pb2.Query(text=text, no_cache=True)
        return _code(lambda: stub.Ask(planner_pb2.AskRequest(query=query), metadata=bearer(target.secret),
                                      timeout=max(1.0, deadline - time.monotonic())))

    with ThreadPoolExecutor(4) as pool:
        outcomes.update(pool.map(ask, range(20)))
    channel.close()
    return dict(outcomes)


def cache_prompts(target: Target, budget_s: float) -> dict[str, Any]:
    stub, channel = _stub(target, cache_pb2_grpc.CacheStub)
    deadline = time.monotonic() + budget_s
    outcomes: Counter[str] = Counter()
    for size in (MiB, 100 * 1024):
        for i in range(400):
            if time.monotonic() > deadline:
                outcomes["skipped"] += 1
                continue
            lookup = cache_pb2.CacheLookup(prompt=f"{i:04d}" + "x" * (size - 4), model="smollm2-135m")
            code = _code(lambda lookup=lookup: stub.Put(cache_pb2.PutRequest(lookup=lookup, response="ok"),
                                                        metadata=bearer(target.secret), timeout=10))
            outcomes[f"{size // 1024}KiB:{code}"] += 1
    stats = stub.Stats(cache_pb2.StatsRequest(), metadata=bearer(target.secret), timeout=10).stats
    channel.close()
    return {**outcomes, "stats_bytes": stats.bytes, "entries": stats.entries}


def tools_json(target: Target, budget_s: float) -> dict[str, Any]:
    stub, channel = _stub(target, cache_pb2_grpc.CacheStub)
    outcomes: Counter[str] = Counter()
    huge = '["' + "x" * (15 * 10**6) + '"]'
    nested = "[" * 100_000 + "]" * 100_000
    deadline = time.monotonic() + budget_s
    for name, value, times in (("15MB", huge, 5), ("nested", nested, 50)):
        for _ in range(times):
            if time.monotonic() > deadline:
                break
            lookup = cache_pb2.CacheLookup(prompt="p", model="m", params=common_pb2.GenerationParams(tools_json=value))
            outcomes[f"{name}:" + _code(lambda lookup=lookup: stub.Put(
                cache_pb2.PutRequest(lookup=lookup, response="r"), metadata=bearer(target.secret), timeout=10))] += 1
    channel.close()
    return dict(outcomes)


def task_turns(target: Target, budget_s: float) -> dict[str, Any]:
    stub, channel = _stub(target, planner_pb2_grpc.PlannerStub)
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + budget_s
    for turn_kb in (240, 60):
        history = [common_pb2.ChatMessage(role="user" if i % 2 else "assistant", content="x" * turn_kb * 1024)
                   for i in range(64)]
        for _ in range(20):
            if time.monotonic() > deadline:
                break
            query = planner_pb2.Query(text="What is 1 + 1?", history=history)
            outcomes[f"{turn_kb}KB:" + _code(lambda query=query: stub.Ask(
                planner_pb2.AskRequest(query=query), metadata=bearer(target.secret), timeout=30))] += 1
    pages, listed, token = 0, 0, ""
    for _ in range(100):
        reply = stub.ListTasks(planner_pb2.ListTasksRequest(page_size=500, page_token=token),
                               metadata=bearer(target.secret), timeout=10)
        pages, listed, token = pages + 1, listed + len(reply.tasks), reply.next_page_token
        if not token:
            break
    channel.close()
    return {**outcomes, "list_pages": pages, "listed": listed}


def forged_replica(target: Target, budget_s: float) -> dict[str, Any]:
    stub, channel = _stub(target, replica_pb2_grpc.ReplicaStub)
    prompt, model = "What is the capital of France?", "smollm2-135m"
    key = cache_key(prompt, model)
    now = int(time.time() * 1000)

    def entry(response: str, primary: str, created: int, expires: int) -> common_pb2.CacheEntry:
        return common_pb2.CacheEntry(key=key, model=model, prompt=prompt, response=response, created_unix_ms=created,
                                     expires_unix_ms=expires, size_bytes=len(response), checksum=checksum(response),
                                     primary_node_id=primary, critical=True)

    honest = entry("Paris.", target.replica_id, now, now + 60_000)
    stub.Store(replica_pb2.StoreRequest(entry=honest, sender_node_id=target.replica_id),
               metadata=bearer(target.secret), timeout=10)
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + budget_s
    year_2200 = 7_258_118_400_000
    for i in range(200):
        if time.monotonic() > deadline:
            break
        forger = f"forger-{i % 4}"
        fake = entry("Lyon.", forger, year_2200 - 1, year_2200)
        reply = stub.Store(replica_pb2.StoreRequest(entry=fake, sender_node_id=forger), metadata=bearer(target.secret),
                           timeout=10)
        outcomes["accepted" if reply.accepted else "refused"] += 1
    fetched = stub.Fetch(replica_pb2.FetchRequest(key=key), metadata=bearer(target.secret), timeout=10)
    channel.close()
    return {**outcomes, "held": fetched.entry.response if fetched.found else None,
            "expires_in_s": round((fetched.entry.expires_unix_ms - now) / 1000) if fetched.found else None}


def ttl(target: Target, budget_s: float) -> dict[str, Any]:
    stub, channel = _stub(target, cache_pb2_grpc.CacheStub)
    put = stub.Put(cache_pb2.PutRequest(lookup=cache_pb2.CacheLookup(prompt="forever", model="m"), response="r",
                                        ttl_ms=2**62), metadata=bearer(target.secret), timeout=10)
    channel.close()
    return {"ttl_days": round((put.entry.expires_unix_ms - put.entry.created_unix_ms) / 86_400_000, 1)}


def _http(attack: Callable[[http_attacks.Target, float], dict[str, Any]]
          ) -> Callable[[Target, float], dict[str, Any]]:
    def run(target: Target, budget_s: float) -> dict[str, Any]:
        return attack(http_attacks.Target(target.url, target.secret), budget_s)

    run.__name__ = attack.__name__
    return run


ATTACKS: list[Callable[[Target, float], dict[str, Any]]] = [
    redos, cache_prompts, tools_json, task_turns, forged_replica, ttl,
    *(_http(a) for a in http_attacks.ATTACKS.values()),
]
"""Every attack, run in this order; each a module-level function (it is pickled to its process)."""


def _run_in_child(name: str, target: Target, budget_s: float) -> dict[str, Any]:
    attack = next(a for a in ATTACKS if a.__name__ == name)
    return attack(target, budget_s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per attack at most (default 30)")
    parser.add_argument("--only", action="append", choices=[a.__name__ for a in ATTACKS],
                        help="run only this attack (repeatable)")
    args = parser.parse_args()
    secret = secrets.token_urlsafe(24)
    common = ("--no-mdns", "--cache-store", "memory", "--cache-max-bytes", str(CACHE_BUDGET))
    nodes: list[NodeProcess] = []
    try:
        node = spawn_node("abuse-core", secret, "--roles", "planner,tools,cache,replica,bridge", "--tools",
                          "calculator,web_search", *common)
        nodes.append(node)
        peer = spawn_node("abuse-replica", secret, "--roles", "cache,replica", "--peer", node.address, *common)
        nodes.append(peer)
        url = next(line.split()[-1] for line in node.output if " dashboard " in line).removesuffix("/llmlab")
        target = Target(node.address, url, secret, replica_id="abuse-replica")
        time.sleep(3)  # the peers find each other
        with Prober(node.address, secret) as idle:
            time.sleep(3)
        baseline = report("ListPeers, no attack", idle.samples, width=30)
        worst = 0.0
        for attack in ATTACKS:
            name = attack.__name__
            if args.only and name not in args.only:
                continue
            before = [rss_bytes(n.process.pid) for n in nodes]
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as attacker:
                attacker.submit(time.sleep, 0).result()  # the child starts before the measurement
                with Prober(node.address, secret) as probe:
                    try:
                        outcome = attacker.submit(_run_in_child, name, target, args.budget).result()
                    except Exception as exc:  # an attack that fails is a figure too
                        outcome = {"attack_failed": repr(exc)[:200]}
            after = [rss_bytes(n.process.pid) for n in nodes]
            samples = probe.samples or [0.0]
            worst = max(worst, sorted(samples)[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))])
            growth = "  ".join(f"{n.name} rss {b / MiB:.0f}->{a / MiB:.0f} MiB" for n, b, a in zip(nodes, before, after,
                                                                                                  strict=True))
            report(f"ListPeers during {name}", samples, baseline, base_name="idle", width=30,
                   extra=f"  failed={probe.failures}  {growth}  {json.dumps(outcome)}")
        print(f"goal: p99 under {GOAL_P99_S * 1000:.0f} ms during every attack: "
              f"{'met' if worst < GOAL_P99_S else 'NOT met'} (worst p99 {worst * 1000:.1f} ms); "
              f"cache budget {CACHE_BUDGET / MiB:.0f} MiB per node")
    finally:
        for n in reversed(nodes):
            with contextlib.suppress(Exception):
                n.stop(signal.SIGTERM, timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
