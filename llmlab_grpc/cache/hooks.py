"""The cache's two small interfaces to the rest of a node: read-through and change hooks.

The cache calls out through these and never imports what implements them, so
``llmlab_grpc/cache/`` knows nothing of replication (``tests/test_structure.py`` checks it):

* ``PeerSource``, asked by the cache: on a local miss (``Cache.Get`` with ``read_through``),
  a verified copy from a peer; after a put, the wait for W verified copies; a delete of a key
  not held here, so the mesh still forgets it; after a semantic miss, the entries peers hold
  that mean the same (``Replica.Search``); and the ``replication_shortfall`` figure of
  the statistics. The replica role's ``Replicator`` is one; the replica component attaches
  it (``CacheManager.attach_peer_source``) when it starts and detaches it when it stops.
  Without one, a miss is a miss and a put has its one local copy.
* ``CacheListener``, told by the cache: every put and every removal with its reason
  (deleted, cleared, evicted, expired, lost, handed_off). Subscribers (the replicator, the
  bridge's cache sync) register with ``CacheManager.add_listener``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from llmlab_grpc.cache.entry import CacheEntry, EntryMeta
    from llmlab_grpc.proto.llmlab.v1 import replica_pb2


class PeerSource(Protocol):
    """What backs a cache beyond its own store: the cache calls it, it never patches the cache."""

    async def read_through(self, key: str) -> tuple[CacheEntry, str] | None:
        """After a local miss: ``(entry, source_node_id)`` of a verified copy on a peer, or None."""
        ...

    async def confirm_copies(self, entry: CacheEntry, timeout_s: float) -> tuple[int, int, int]:
        """After a local put: ``(copies verified, copies target, W)`` once W copies are verified or ``timeout_s``."""
        ...

    def semantic_peers(self) -> int:
        """How many peers ``semantic_search`` would ask now (0: a semantic miss here is a miss)."""
        ...

    def semantic_search(self, request: replica_pb2.SearchRequest) -> AsyncGenerator[tuple[CacheEntry, str], None]:
        """After a local semantic miss: verified entries peers hold for the question, with their
        holders, as they arrive (an async generator: closing it cancels the calls still out)."""
        ...

    def bury(self, key: str) -> None:
        """A delete of ``key``, held here or not: the peers' copies must go too (a tombstone)."""
        ...

    def shortfall(self) -> int:
        """Writes whose copies are not all acknowledged yet (``replication_shortfall`` in the statistics)."""
        ...


class CacheListener:
    """Subscriber to cache changes (``CacheManager.add_listener``); override what you need.

    Called synchronously on the thread that made the change, after the cache's lock is
    released: keep it quick and hand work to your own queue (from another thread, an
    asyncio consumer needs ``loop.call_soon_threadsafe``). An exception is logged and
    never reaches the cache's caller.
    """

    def on_put(self, entry: CacheEntry) -> None:
        """A local ``put`` stored ``entry`` (``put_entry`` notifies only when asked)."""

    def on_delete(self, key: str, reason: str) -> None:
        """``key`` left the cache; ``reason`` is deleted, cleared, evicted, expired, lost or handed_off."""

    def on_removed(self, meta: EntryMeta, reason: str) -> None:
        """Like ``on_delete`` with the entry's metadata (a tombstone needs its expiry); calls ``on_delete``."""
        self.on_delete(meta.key, reason)
