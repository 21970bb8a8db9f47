"""The nemesis's bookkeeping: what the mesh acknowledged, and a check that it kept its word.

A ``Checker`` records every write and delete made through ``put``/``delete`` (real
``Cache.Put``/``Cache.Delete`` calls to a node of a ``Lan``) and what came back: a put is
**acknowledged** when it returned with ``copies >= write_acks`` (W), a delete when it
returned at all. Unacknowledged puts (short of W, or failed) may or may not survive; if
one does, it must carry the value that was written.

``converged()`` reads every key from every live node (``Cache.Get`` with read-through: what
a client would be served; ``Replica.Fetch``: whether the node holds a copy) and returns the
problems: an acknowledged entry missing or wrong (``lost``), a deleted or expired entry
served, a wrong value served, or an entry on fewer than N+1 nodes. ``wait_converged`` polls
it until nothing is wrong and returns the seconds that took. Shared by the nemesis tests
(``test_nemesis.py``) and ``scripts/bench/chaos.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from llmlab_grpc.cache.keys import cache_key
from llmlab_grpc.proto.llmlab.v1 import cache_pb2, replica_pb2
from tests.lan.harness import Lan, LanNode, LanRpcError

MODEL = "nemesis-model"
FAST_FLAGS = ("--roles", "cache,replica", "--cache-store", "memory", "--heartbeat-interval", "0.3",
              "--peer-timeout", "1.5", "--replication-retry", "0.5", "--anti-entropy", "2")
"""Light nodes with short timeouts: a fault is noticed in 1.5 s, differences repaired within 2 s."""


@dataclass
class Problems:
    lost: list[str] = field(default_factory=list)  # acknowledged, now missing somewhere
    wrong: list[str] = field(default_factory=list)  # a value that was never written for the key
    resurrected: list[str] = field(default_factory=list)  # deleted (acknowledged) or expired, still served
    short: list[str] = field(default_factory=list)  # on fewer than N+1 nodes

    def __bool__(self) -> bool:
        return bool(self.lost or self.wrong or self.resurrected or self.short)

    def summary(self) -> str:
        return (f"lost {len(self.lost)}, wrong {len(self.wrong)}, resurrected {len(self.resurrected)}, "
                f"short {len(self.short)}; e.g. {(self.lost + self.wrong + self.resurrected + self.short)[:3]}")


@dataclass
class Checker:
    lan: Lan
    copies_wanted: int = 3  # N+1
    acked: dict[str, str] = field(default_factory=dict)  # key -> value of the last acknowledged put
    written: dict[str, set[str]] = field(default_factory=dict)  # key -> every value ever written
    deleted: set[str] = field(default_factory=set)  # acknowledged deletes (no put since)
    expiring: dict[str, float] = field(default_factory=dict)  # key -> wall time its ttl ran out
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("puts", "acked", "partial", "failed", "deletes", "reads", "wrong_reads"), 0))

    def put(self, node: LanNode, prompt: str, value: str, ttl_ms: int = 0, timeout: float = 6.0) -> bool:
        """``Cache.Put`` through ``node``; True when acknowledged (W copies)."""
        key = cache_key(prompt, MODEL)
        self.written.setdefault(key, set()).add(value)
        self.counts["puts"] += 1
        request = cache_pb2.PutRequest(lookup=cache_pb2.CacheLookup(prompt=prompt, model=MODEL), response=value,
                                       ttl_ms=ttl_ms)
        try:
            reply = node.call("/llmlab.v1.Cache/Put", request, cache_pb2.PutResponse, timeout=timeout)
        except LanRpcError:
            self.counts["failed"] += 1
            return False
        if ttl_ms:
            self.expiring[key] = time.time() + ttl_ms / 1000
        if reply.copies < reply.write_acks:
            self.counts["partial"] += 1
            return False
        self.counts["acked"] += 1
        self.acked[key] = value
        self.deleted.discard(key)
        return True

    def delete(self, node: LanNode, key: str, timeout: float = 6.0) -> bool:
        self.counts["deletes"] += 1
        try:
            node.call("/llmlab.v1.Cache/Delete", cache_pb2.DeleteRequest(key=key), cache_pb2.DeleteResponse,
                      timeout=timeout)
        except LanRpcError:
            return False
        self.acked.pop(key, None)
        self.deleted.add(key)
        return True

    def read(self, node: LanNode, key: str) -> str | None:
        """What ``node`` serves for ``key`` (read-through), counting a wrong value."""
        self.counts["reads"] += 1
        try:
            reply = node.call("/llmlab.v1.Cache/Get", cache_pb2.GetRequest(key=key, read_through=True),
                              cache_pb2.GetResponse, timeout=5)
        except LanRpcError:
            return None
        if not reply.found:
            return None
        if reply.entry.response not in self.written.get(key, set()):
            self.counts["wrong_reads"] += 1
        return reply.entry.response

    def holds(self, node: LanNode, key: str) -> bool:
        try:
            return node.call("/llmlab.v1.Replica/Fetch", replica_pb2.FetchRequest(key=key),
                             replica_pb2.FetchResponse, timeout=5).found
        except LanRpcError:
            return False

    def converged(self, nodes: list[LanNode]) -> Problems:
        problems = Problems()
        now = time.time()
        for key in sorted(set(self.written)):
            expired = self.expiring.get(key, float("inf")) <= now
            served = [self.read(n, key) for n in nodes]
            if any(v is not None and v not in self.written[key] for v in served):
                problems.wrong.append(key)
            if key in self.deleted or expired:
                if any(v is not None for v in served):
                    problems.resurrected.append(key)
                continue
            if key in self.acked:
                if any(v is None for v in served):
                    problems.lost.append(key)
                elif sum(self.holds(n, key) for n in nodes) < min(self.copies_wanted, len(nodes)):
                    problems.short.append(key)
        return problems

    def wait_converged(self, nodes: list[LanNode], timeout: float = 60.0) -> float:
        """Seconds until ``converged`` finds nothing wrong; fails naming what is still wrong."""
        started = time.monotonic()
        problems = Problems()
        while time.monotonic() - started < timeout:
            problems = self.converged(nodes)
            if not problems:
                return time.monotonic() - started
            time.sleep(0.5)
        raise AssertionError(f"no convergence after {timeout:.0f} s: {problems.summary()}")
