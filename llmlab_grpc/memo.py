"""``BoundedMemo``: the least-recently-used memo behind the hit paths' caches of work done once.

The planner keeps a query's pure facts (``planner/prelude.py``) and an exact hit's task template
(``planner/hit_wire.py``), the API a request body's translation (``openai_api/request_memo.py``):
each is input a caller controls, so each memo is bounded by entries and by the size of one entry
(as its owner measures it), and an entry over that size is simply not kept.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedMemo(Generic[K, V]):
    """key -> value, at most ``capacity`` of them, each at most ``max_bytes``, least recently used out.

    Subclasses add a ``put`` that measures their entry and calls ``_keep``; ``get`` is the hot path
    (a hit) and does nothing else but the lookup and the recency update."""

    def __init__(self, capacity: int, max_bytes: int) -> None:
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._kept: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        found = self._kept.get(key)
        if found is not None:
            self._kept.move_to_end(key)
        return found

    def _keep(self, key: K, value: V, size: int) -> None:
        """Remember ``value`` for ``key`` unless ``size`` is over the limit; the oldest go past the capacity."""
        if size > self._max_bytes or self._capacity <= 0:
            return
        self._kept[key] = value
        self._kept.move_to_end(key)
        while len(self._kept) > self._capacity:
            self._kept.popitem(last=False)

    def __len__(self) -> int:
        return len(self._kept)
