"""Where copies of an entry go: rendezvous (highest-random-weight) hashing of its key.

Every node ranks the candidates for a key the same way from nothing but the key and
the node ids, so placement needs no coordination and no shared table: the replicas of
a key are the first N of ``rank(key, live replica nodes without the primary)``. When a
node leaves, only the keys it held move, each to the next node of its own ranking;
when a node joins, it takes over only the keys it now outranks others on. That is
what makes repair and sync touch the fewest entries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def weight(key: str, node_id: str) -> int:
    """The random-looking but fixed weight of ``node_id`` for ``key`` (sha256, 64 bits)."""
    digest = hashlib.sha256(f"{key}\x00{node_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def rank(key: str, node_ids: Iterable[str]) -> list[str]:
    """``node_ids`` (deduplicated) from most to least preferred for ``key``."""
    return sorted(set(node_ids), key=lambda n: (weight(key, n), n), reverse=True)


def place(key: str, node_ids: Iterable[str], count: int, exclude: Iterable[str] = ()) -> list[str]:
    """The ``count`` nodes that should hold copies of ``key``, best first, never those in ``exclude``."""
    skip = set(exclude)
    return [n for n in rank(key, node_ids) if n not in skip][: max(0, count)]
