"""The bounded, priority-ordered queue of keys waiting to be replicated.

A put must never wait for the network, and a burst of puts must not grow memory
without bound, so the cache's listener only offers keys here. The queue holds at most
``maxsize`` keys; the most important come out first (critical, then most hits, then
oldest). When it is full, a more important key displaces the least important one;
whatever does not fit is handed back to the caller, which records it as a shortfall
for the retry loop to pick up later: nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

Priority = tuple[bool, int]
"""``(critical, hits)``: larger is more important."""


class ReplicationQueue:
    """Keys to replicate, at most ``maxsize``, most important first; one entry per key."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("the replication queue needs room for at least one key")
        self.maxsize = maxsize
        self._heap: list[tuple[int, int, int, str]] = []  # (-critical, -hits, seq, key)
        self._queued: dict[str, tuple[int, int, int]] = {}  # key -> its live heap item's (-critical, -hits, seq)
        self._seq = itertools.count()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, key: object) -> bool:
        return key in self._queued

    def offer(self, key: str, priority: Priority) -> str | None:
        """Queue ``key`` (or raise its priority). Returns the key left out when full, else ``None``."""
        item = (-int(priority[0]), -int(priority[1]), next(self._seq))
        old = self._queued.get(key)
        if old is not None:
            if item[:2] < old[:2]:  # more important now: re-queue at the new priority
                self._push(key, item)
            return None
        if len(self._queued) >= self.maxsize:
            victim = max(self._queued, key=lambda k: self._queued[k])  # least important, newest
            if self._queued[victim] < item:
                return key  # the newcomer is the least important one
            del self._queued[victim]
            self._push(key, item)
            return victim
        self._push(key, item)
        return None

    def _push(self, key: str, item: tuple[int, int, int]) -> None:
        self._queued[key] = item
        heapq.heappush(self._heap, (*item, key))
        if len(self._heap) > 2 * len(self._queued) + 64:  # stale items of discarded keys pile up: rebuild
            self._heap = [(*it, k) for k, it in self._queued.items()]
            heapq.heapify(self._heap)
        self._ready.set()

    def discard(self, key: str) -> None:
        """Forget ``key`` (its stale heap item is skipped when it surfaces)."""
        self._queued.pop(key, None)

    def pop_nowait(self) -> str | None:
        """The most important queued key, or ``None`` when empty."""
        while self._heap:
            crit, hits, seq, key = heapq.heappop(self._heap)
            if self._queued.get(key) == (crit, hits, seq):
                del self._queued[key]
                return key
        self._ready.clear()
        return None

    async def get(self) -> str:
        """Wait for and return the most important queued key."""
        while True:
            key = self.pop_nowait()
            if key is not None:
                return key
            await self._ready.wait()
