"""Tombstones: deletes remembered until the deleted entry would have expired.

Without them a delete is undone by the next node that missed it: a replica that was
away during the delete still holds its copy, and a sync or an anti-entropy round would
hand that copy back. A tombstone says "copies of this key created at or before
``deleted_unix_ms`` are dead"; a later put (created after it) is a new answer and wins.
It is kept until ``expires_unix_ms``, when every copy it could meet has expired anyway
(an expired entry is never stored again), and then it goes.

Bounded: at most ``max_count`` tombstones (the oldest deletes go first beyond it), each
costing ``TOMBSTONE_BYTES`` in the node's accounting. Thread-safety: used on the node's
event loop only.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from llmlab_grpc.proto.llmlab.v1 import replica_pb2

TOMBSTONE_BYTES = 160
"""What one tombstone costs in memory, counted (key, two times, primary id, dict slot)."""


@dataclass(frozen=True)
class Tombstone:
    key: str
    deleted_unix_ms: int
    expires_unix_ms: int
    primary_node_id: str = ""

    def to_proto(self) -> replica_pb2.Tombstone:
        return replica_pb2.Tombstone(key=self.key, deleted_unix_ms=self.deleted_unix_ms,
                                     expires_unix_ms=self.expires_unix_ms, primary_node_id=self.primary_node_id)

    @classmethod
    def from_proto(cls, proto: replica_pb2.Tombstone) -> Tombstone:
        return cls(proto.key, proto.deleted_unix_ms, proto.expires_unix_ms, proto.primary_node_id)

    def kills(self, created_unix_ms: int) -> bool:
        """Whether a copy created at ``created_unix_ms`` is one this delete removed."""
        return created_unix_ms <= self.deleted_unix_ms


class Tombstones:
    """key -> the newest tombstone of that key, expiring with the entry it buried."""

    def __init__(self, max_count: int = 100_000) -> None:
        self.max_count = max(1, max_count)
        self._by_key: dict[str, Tombstone] = {}
        self._expiry: list[tuple[int, str]] = []  # heap (expires, key); stale items skipped

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    @property
    def bytes(self) -> int:
        return len(self._by_key) * TOMBSTONE_BYTES

    def get(self, key: str, now_ms: int) -> Tombstone | None:
        stone = self._by_key.get(key)
        if stone is not None and now_ms >= stone.expires_unix_ms:
            del self._by_key[key]
            return None
        return stone

    def add(self, stone: Tombstone, now_ms: int) -> bool:
        """Keep ``stone`` unless it has expired or a newer delete of the key is known; True when kept."""
        if now_ms >= stone.expires_unix_ms:
            return False
        old = self.get(stone.key, now_ms)
        if old is not None and old.deleted_unix_ms >= stone.deleted_unix_ms:
            return False
        self._by_key[stone.key] = stone
        heapq.heappush(self._expiry, (stone.expires_unix_ms, stone.key))
        self.sweep(now_ms)
        while len(self._by_key) > self.max_count:  # oldest delete goes first
            oldest = min(self._by_key.values(), key=lambda t: t.deleted_unix_ms)
            del self._by_key[oldest.key]
        return True

    def discard(self, key: str) -> None:
        """A put newer than the delete: the key is alive again."""
        self._by_key.pop(key, None)

    def sweep(self, now_ms: int) -> int:
        """Forget tombstones whose entries would have expired; returns how many."""
        gone = 0
        heap = self._expiry
        while heap and heap[0][0] <= now_ms:
            expires, key = heapq.heappop(heap)
            stone = self._by_key.get(key)
            if stone is not None and stone.expires_unix_ms == expires:
                del self._by_key[key]
                gone += 1
        if len(heap) > 2 * len(self._by_key) + 64:
            self._expiry = [(t.expires_unix_ms, k) for k, t in self._by_key.items()]
            heapq.heapify(self._expiry)
        return gone

    def live(self, now_ms: int) -> list[Tombstone]:
        return [t for t in self._by_key.values() if now_ms < t.expires_unix_ms]
