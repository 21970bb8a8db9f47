"""Bucket hashes for anti-entropy: what two replica nodes compare to find what differs.

The **shared key set** of nodes A and B is the keys both should hold: the key's live
primary and its N replicas (the first N of its rendezvous ranking over the live replica
nodes without the primary: exactly where replication puts them), or, when the primary is
unknown or gone, the first N+1 of the ranking (``responsible``). Both nodes
compute it from the same membership (the initiator sends its list), so two nodes in
sync hash exactly the same items.

An **item** is what is compared of a key: its expiry and version (an entry's creation
time and checksum, or a tombstone's delete time). Items fall in ``BUCKETS`` buckets by
the key's first byte; a bucket's hash is the XOR of its items' 8-byte BLAKE2b hashes,
so it costs one pass with no sort, and two nodes in sync exchange just
``BUCKETS * 8`` bytes. Only the items of buckets that differ travel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from llmlab_grpc.proto.llmlab.v1 import replica_pb2
from llmlab_grpc.replication.placement import rank

BUCKETS = 256
HASH_BYTES = 8
MAX_CACHED_RANKS = 200_000
"""Rankings a ``Digester`` keeps (about 150 bytes each, 30 MB at most) before it starts over."""


@dataclass(frozen=True)
class Item:
    """One key as anti-entropy sees it."""

    key: str
    expires_unix_ms: int
    version: int
    tombstone: bool = False
    checksum: str = ""
    primary: str = field(default="", compare=False)
    """The entry's primary as this node knows it (not hashed: it decides who shares the key)."""

    def digest(self) -> int:
        text = f"{self.key}|{self.expires_unix_ms}|{self.version}|{'T' if self.tombstone else self.checksum}"
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=HASH_BYTES).digest(), "big")

    def order(self) -> tuple[int, int, int, str]:
        """Which of two items of a key wins: the later version; at the same time a delete beats a put."""
        return self.version, int(self.tombstone), self.expires_unix_ms, self.checksum

    def to_proto(self) -> replica_pb2.DigestItem:
        return replica_pb2.DigestItem(key=self.key, expires_unix_ms=self.expires_unix_ms, version=self.version,
                                      tombstone=self.tombstone, checksum=self.checksum)

    @classmethod
    def from_proto(cls, proto: replica_pb2.DigestItem) -> Item:
        return cls(proto.key, proto.expires_unix_ms, proto.version, proto.tombstone, proto.checksum)


def bucket_of(key: str) -> int:
    return int(key[:2], 16) % BUCKETS if len(key) >= 2 else 0


def responsible(key: str, members: Iterable[str], copies: int) -> list[str]:
    """The nodes that should hold ``key`` among ``members``: the first ``copies`` of its ranking."""
    return rank(key, members)[:copies]


class Digester:
    """Bucket hashes and shared items of one node toward its peers, for one membership."""

    def __init__(self, me: str, members: Iterable[str], copies: int) -> None:
        self.me = me
        self.members = sorted(set(members) | {me})
        self.copies = copies
        self._rank: dict[str, tuple[str, list[str]]] = {}

    def holders(self, key: str, primary: str = "") -> list[str]:
        """Who should hold ``key``: its live primary plus the N replicas placement gives it
        (the first N of the ranking without the primary), else the first N+1 of the ranking."""
        cached = self._rank.get(key)
        if cached is None or cached[0] != primary:
            if len(self._rank) > MAX_CACHED_RANKS:
                self._rank.clear()  # keys long gone pile up: start over
            if primary and primary in self.members:
                found = [primary, *[n for n in rank(key, self.members) if n != primary][: self.copies - 1]]
            else:
                found = responsible(key, self.members, self.copies)
            cached = self._rank[key] = (primary, found)
        return cached[1]

    def shared(self, items: Iterable[Item], peer: str, buckets: set[int] | None = None) -> list[Item]:
        """``items`` in the shared key set with ``peer`` (and in ``buckets`` when given)."""
        out = []
        for item in items:
            if buckets is not None and bucket_of(item.key) not in buckets:
                continue
            holders = self.holders(item.key, item.primary)
            if self.me in holders and peer in holders:
                out.append(item)
        return out

    def buckets(self, items: Iterable[Item], peers: Iterable[str]) -> dict[str, list[int]]:
        """peer -> its ``BUCKETS`` bucket hashes over the items shared with it, in one pass."""
        wanted = set(peers)
        out = {p: [0] * BUCKETS for p in wanted}
        for item in items:
            holders = self.holders(item.key, item.primary)
            if self.me not in holders:
                continue
            targets = [p for p in holders if p in wanted]
            if not targets:
                continue
            h, b = item.digest(), bucket_of(item.key)
            for peer in targets:
                out[peer][b] ^= h
        return out


def encode(buckets: list[int]) -> list[bytes]:
    return [b.to_bytes(HASH_BYTES, "big") for b in buckets]


def decode(raw: Iterable[bytes]) -> list[int]:
    return [int.from_bytes(b, "big") for b in raw]
