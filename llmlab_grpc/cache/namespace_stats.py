"""Cache figures per namespace, for ``/metrics`` (``CacheManager.stats_by_namespace``).

Namespaces are named by clients, so their number is bounded here: the default
namespace ``""`` and the first ``MAX_NAMESPACES - 1`` others seen get their own
figures, later ones are counted together under ``OTHER``. A miss is counted under
the namespace its caller names (a lookup by bare key names none: ``""``). The
manager calls every method with its lock held.
"""

from __future__ import annotations

from typing import Any

MAX_NAMESPACES = 64
OTHER = "_other"
COUNTERS = ("hits", "misses", "puts", "evictions", "expirations", "lost")


class NamespaceStats:
    """Counters, entries and bytes by namespace (bounded; see the module docstring)."""

    def __init__(self, limit: int = MAX_NAMESPACES) -> None:
        self._limit = limit
        self._by: dict[str, dict[str, int]] = {}
        self._row("")  # the default namespace is always reported, even before its first lookup

    def _row(self, namespace: str) -> dict[str, int]:
        row = self._by.get(namespace)
        if row is None:
            if len(self._by) >= self._limit and namespace != OTHER:
                return self._row(OTHER)
            row = self._by[namespace] = dict.fromkeys((*COUNTERS, "entries", "bytes"), 0)
        return row

    def count(self, namespace: str, event: str, n: int = 1) -> None:
        self._row(namespace)[event] += n

    def stored(self, namespace: str, size: int) -> dict[str, int]:
        """Count an entry stored; returns the namespace's figures (the same dict for as long as this
        object lives: ``emptied`` zeroes it in place), where the manager counts the entry's hits."""
        row = self._row(namespace)
        row["entries"] += 1
        row["bytes"] += size
        return row

    def removed(self, namespace: str, size: int) -> None:
        row = self._row(namespace)
        row["entries"] -= 1
        row["bytes"] -= size

    def emptied(self) -> None:
        """Every entry left (``clear``); counters stay."""
        for row in self._by.values():
            row["entries"] = row["bytes"] = 0

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {namespace: dict(row) for namespace, row in self._by.items()}
