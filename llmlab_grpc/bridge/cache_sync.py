"""Feeds the cache replicas of mobile nodes: local puts and deletes, batched, as ``cache_sync``.

A mobile node that says ``hello.cache_replica`` gets a snapshot of the bridge node's
live cache entries when it pairs (hottest first, bounded) and afterwards every put and
delete of the local cache, coalesced over ``BATCH_DELAY_S`` and cut into messages that
fit the bridge's message limit. Entries carry ``expires_unix_ms``; the browser drops
them when that time passes. Entries whose response is over ``MAX_ENTRY_BYTES`` are not
sent (a phone's storage is small) and neither are already-expired ones.

A phone sees only what it may (``SyncPolicy``): entries of the namespaces the bridge
allows (``bridge_sync_namespaces``, default every namespace) and never an entry stored
with a per-user API key (``writer`` set: another user's private prompt and answer)
unless ``bridge_sync_private`` says so. Copies go out without their semantic vector and
writer name, which a phone has no use for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from llmlab_grpc.bridge.hub import MobileHub, MobileSession
from llmlab_grpc.loop_hop import call_in_loop
from llmlab_grpc.proto.llmlab.v1 import bridge_pb2, common_pb2

if TYPE_CHECKING:
    from llmlab_grpc.ports import CacheEvents

log = logging.getLogger(__name__)

BATCH_DELAY_S = 0.2
MAX_PENDING = 2000
MAX_ENTRY_BYTES = 64 * 1024
SNAPSHOT_ENTRIES = 500
MAX_ENTRIES_PER_MESSAGE = 200


def _fits(entry: common_pb2.CacheEntry) -> bool:
    return entry.expires_unix_ms == 0 or entry.expires_unix_ms > time.time() * 1000


class SyncPolicy:
    """Which cache entries a paired phone may hold."""

    def __init__(self, namespaces: Iterable[str] = ("*",), private: bool = False) -> None:
        names = set(namespaces)
        self.every_namespace = "*" in names
        self.namespaces = frozenset(names - {"*"})
        self.private = private

    def allows(self, entry: common_pb2.CacheEntry) -> bool:
        if entry.writer and not self.private:
            return False
        return self.every_namespace or entry.namespace in self.namespaces


def _for_phone(entry: common_pb2.CacheEntry) -> common_pb2.CacheEntry:
    copy = common_pb2.CacheEntry()
    copy.CopyFrom(entry)
    copy.ClearField("embedding")
    copy.ClearField("writer")
    return copy


class CacheSync:
    """Batches local cache changes and pushes them to the replica-keeping mobile nodes."""

    def __init__(self, hub: MobileHub, max_message_bytes: int, policy: SyncPolicy | None = None) -> None:
        self.hub = hub
        self.policy = policy or SyncPolicy()
        self.budget = int(max_message_bytes * 0.8)
        self._puts: OrderedDict[str, common_pb2.CacheEntry] = OrderedDict()
        self._deletes: OrderedDict[str, None] = OrderedDict()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.snapshot: Callable[[int], Iterable[common_pb2.CacheEntry]] | None = None
        self.source = ""
        self.sent_entries = 0
        self.dropped = 0
        hub.on_paired.append(self._paired)

    # --- hooks the cache calls ---------------------------------------------------

    def on_put(self, entry: common_pb2.CacheEntry) -> None:
        if entry.size_bytes > MAX_ENTRY_BYTES or len(entry.response) > MAX_ENTRY_BYTES or not _fits(entry):
            return
        if not self.policy.allows(entry):
            self.on_delete(entry.key)  # it may replace an entry the phone holds
            return
        self._deletes.pop(entry.key, None)
        self._puts[entry.key] = _for_phone(entry)
        self._puts.move_to_end(entry.key)
        while len(self._puts) > MAX_PENDING:
            self._puts.popitem(last=False)
            self.dropped += 1
        self._wake.set()

    def on_delete(self, key: str) -> None:
        self._puts.pop(key, None)
        self._deletes[key] = None
        while len(self._deletes) > MAX_PENDING:
            self._deletes.popitem(last=False)
        self._wake.set()

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="bridge-cache-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(BATCH_DELAY_S)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # one bad batch must not end syncing
                log.exception("cache sync failed")

    def _batches(self, entries: list[common_pb2.CacheEntry], deleted: list[str]) -> list[bridge_pb2.CacheSync]:
        batches: list[bridge_pb2.CacheSync] = []
        current = bridge_pb2.CacheSync(deleted_keys=deleted)
        size = current.ByteSize()
        for entry in entries:
            cost = entry.ByteSize() * 2 + 64  # JSON is larger than the wire format
            if current.entries and (size + cost > self.budget or len(current.entries) >= MAX_ENTRIES_PER_MESSAGE):
                batches.append(current)
                current, size = bridge_pb2.CacheSync(), 0
            current.entries.append(entry)
            size += cost
        if current.entries or current.deleted_keys:
            batches.append(current)
        return batches

    async def flush(self) -> None:
        """Send what accumulated to every replica-keeping device."""
        entries = [e for e in self._puts.values() if _fits(e)]
        deleted = list(self._deletes)
        self._puts.clear()
        self._deletes.clear()
        if not entries and not deleted:
            return
        targets = [s for s in self.hub.sessions.values() if s.cache_replica and not s.closed]
        batches = self._batches(entries, deleted)
        await asyncio.gather(*(self._send(s, batches) for s in targets))

    async def _send(self, session: MobileSession, batches: list[bridge_pb2.CacheSync]) -> None:
        for batch in batches:
            try:
                await session.link.send(bridge_pb2.BridgeEnvelope(cache_sync=batch))
            except Exception as exc:  # the device went away; the hub drops it
                log.info("cache sync to %s failed: %s", session.name, exc)
                return
            self.sent_entries += len(batch.entries)

    def _paired(self, session: MobileSession) -> None:
        if session.cache_replica and self.snapshot is not None:
            task = asyncio.ensure_future(self._initial(session))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _initial(self, session: MobileSession) -> None:
        """The snapshot a new replica starts from (read off the loop: the store may be Ray)."""
        assert self.snapshot is not None
        snapshot = self.snapshot
        try:
            found = await asyncio.to_thread(lambda: list(snapshot(SNAPSHOT_ENTRIES)))
        except Exception:
            log.exception("cache snapshot for %s failed", session.name)
            return
        entries = [_for_phone(e) for e in found
                   if _fits(e) and e.size_bytes <= MAX_ENTRY_BYTES and len(e.response) <= MAX_ENTRY_BYTES
                   and self.policy.allows(e)]
        if entries:
            await self._send(session, self._batches(entries, []))


def attach(sync: CacheSync, manager: CacheEvents | None) -> bool:
    """Subscribe ``sync`` to the local cache's changes; False when the node has no cache role.

    The cache (``ports.CacheEvents``, the cache role's ``CacheManager``) calls its
    listeners synchronously on whatever thread changed it, so the listener hops onto the
    node's event loop before touching ``sync``.
    """
    if manager is None:
        return False
    from llmlab_grpc.cache.hooks import CacheListener

    loop = asyncio.get_running_loop()

    class _Listener(CacheListener):
        def on_put(self, entry: Any) -> None:
            call_in_loop(loop, sync.on_put, entry.to_proto())

        def on_delete(self, key: str, reason: str) -> None:
            call_in_loop(loop, sync.on_delete, key)

    def snapshot(limit: int) -> list[common_pb2.CacheEntry]:
        entries = (manager.get_entry(meta.key) for meta in manager.describe(hottest_first=True, limit=limit))
        return [e.to_proto() for e in entries if e is not None]

    manager.add_listener(_Listener())
    sync.snapshot = snapshot
    sync.source = type(manager).__name__
    return True
