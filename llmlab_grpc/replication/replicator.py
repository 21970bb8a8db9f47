"""``Replicator``: keeps every cache entry on its primary plus N replica nodes, and reads copies back.

Who does what, so that no two nodes need to agree on anything but the peer table:

* The **primary** of an entry is the node whose cache it was put into. Only the primary
  pushes copies (``replicate``): to the first N nodes of the entry's rendezvous ranking
  over the live ``replica`` peers (``placement.py``), walking further down the ranking
  when one does not answer. The nodes that acknowledged are recorded (``get_replicas``);
  an entry with fewer than N is a **shortfall**, counted in the cache's statistics and
  retried every ``retry_s`` seconds.
* **Writes** never wait: the cache's put notifies this listener, which offers the key to
  a bounded priority queue (critical first, then by hit count) that a few workers drain.
The replica component attaches the replicator to the cache as its peer source
(``cache/hooks.py``: ``read_through``, ``confirm_copies``, ``bury``, ``shortfall``) and
the replicator subscribes to the cache's change hooks (a ``CacheListener``); the cache
itself imports nothing from here.

* **Reads** (``read_through``, behind ``Cache.Get`` with ``read_through``): local miss →
  the ranking's first N+1 nodes one by one → every other replica node at once → miss.
  Each copy is verified (``integrity.py``) before it is returned; a bad one is refused.
* **A peer leaves**: the primary re-replicates its entries whose live replica count fell
  below N to the next nodes of their ranking, hottest first (``repair``). An entry whose
  primary is gone is taken over by the first node of its ranking among the live replica
  nodes (the most likely holder): it becomes the entry's primary and restores N replicas;
  other holders hand their copy to that node in case it has none.
* **A peer joins or returns**: each primary streams it the entries it now ranks among the
  first N for (``sync_to_node``: ``Replica.Sync``, bounded batches, resumable after the
  receiver's ``last_key``).
* An explicit delete on the primary drops the copies too (``Replica.Drop``); eviction and
  expiry stay local, since every copy has the same TTL and its own node's byte budget.

Everything here runs on the node's event loop; cache listener calls may come from any
thread and are handed over with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from llmlab_grpc.cache.entry import CacheEntry, EntryMeta
from llmlab_grpc.cache.errors import InvalidCacheRequest, StoreUnavailable
from llmlab_grpc.cache.hooks import CacheListener
from llmlab_grpc.cache.keys import InvalidParams
from llmlab_grpc.cache.manager import CacheManager
from llmlab_grpc.loop_hop import call_in_loop
from llmlab_grpc.mesh.channels import ChannelPool
from llmlab_grpc.mesh.peer_calls import retryable
from llmlab_grpc.mesh.peers import PeerRecord, PeerTable
from llmlab_grpc.proto.llmlab.v1 import common_pb2, replica_pb2, replica_pb2_grpc
from llmlab_grpc.replication.anti_entropy import DEFAULT_PERIOD_S, AntiEntropy
from llmlab_grpc.replication.calls import being_cancelled, guarded
from llmlab_grpc.replication.digest import responsible
from llmlab_grpc.replication.integrity import RefusedCopy, verify_copy
from llmlab_grpc.replication.placement import place, rank
from llmlab_grpc.replication.queue import ReplicationQueue
from llmlab_grpc.replication.tombstones import Tombstone, Tombstones

log = logging.getLogger(__name__)

DEFAULT_REPLICAS = 2
STORE_TIMEOUT_S = 3.0
FETCH_TIMEOUT_S = 2.0
SEARCH_TIMEOUT_S = 1.0
"""A peer's ``Search`` (an index scan, no embedding) gets this long; a slower peer is a miss."""
SEARCH_FANOUT = 16
"""Peers one semantic search asks at most (all live replica peers in a small mesh)."""
DROP_TIMEOUT_S = 2.0
SYNC_CALL_TIMEOUT_S = 30.0
SYNC_BATCH_ENTRIES = 64
"""Entries per ``SyncRequest`` message."""
SYNC_BATCH_BYTES = 2 * 1024 * 1024
"""Bytes per ``SyncRequest`` message (a single larger entry travels alone)."""
SYNC_CALL_MAX_ENTRIES = 1024
"""Entries per ``Sync`` call; both sides enforce it, and a cut call resumes after ``last_key``."""
SYNC_CALL_MAX_BYTES = 16 * 1024 * 1024
"""Bytes a receiver buffers per ``Sync`` call before it answers (and the sender resumes)."""
SYNC_ATTEMPTS = 3
"""Failed ``Sync`` calls in a row before a sync is left to the next round."""
RETRY_BATCH = 4096
"""Short entries looked at per retry round, hottest first."""
WORKERS = 4
"""Concurrent replications of new puts."""
HINT_WINDOW_S = 3600.0
"""How long a departed replica node is still written for by hinted handoff (stand-ins hold its copies)."""
MAX_DEPARTED = 64
"""Departed nodes remembered for hinted handoff."""
GONE_CHECK_S = 0.5
"""How often a long call checks that its peer is still in the table."""


T = TypeVar("T")


class PeerGone(Exception):
    """The peer a call was for left the peer table before it answered."""


@dataclass(frozen=True)
class Location:
    """Who holds an entry: its live primary (when one holds it), the other holders, and the placement now."""

    key: str
    primary: str
    replicas: list[str]
    placement: list[str]


def _now_ms() -> int:
    return int(time.time() * 1000)


class Replicator(CacheListener):
    """Replication for the cache of one node. See the module docstring for the protocol."""

    def __init__(
        self,
        manager: CacheManager,
        node_id: str,
        peers: PeerTable,
        channels: ChannelPool,
        *,
        replica_count: int = DEFAULT_REPLICAS,
        queue_size: int = 1024,
        retry_s: float = 5.0,
        write_acks: int = 1,
        anti_entropy_s: float = DEFAULT_PERIOD_S,
        self_name: str = "",
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        if replica_count < 0:
            raise ValueError("replica_count must be 0 or more")
        self.manager = manager
        """The cache this replicator copies from and into (the cache role's, or the replica role's own)."""
        self.node_id = node_id
        self.self_name = self_name or node_id
        self.self_address = ""
        self.peers = peers
        self.channels = channels
        self.replica_count = replica_count
        self.retry_s = retry_s
        self.write_acks = write_acks
        self.started_unix_ms = clock()
        """When this node's process started: copies naming it primary made before are its own, back."""
        """W: copies verified before a put returns (this node's included); 0 means all N+1."""
        self._clock = clock
        self._acks: dict[str, set[str]] = {}  # owned key -> node ids that acknowledged a copy
        self._short: set[str] = set()  # owned keys with fewer than N acknowledged live replicas
        self.queue = ReplicationQueue(queue_size)
        self.tombstones = Tombstones()
        self.anti_entropy = AntiEntropy(self, anti_entropy_s)
        self._last_anti_entropy = time.monotonic()
        self._ae_wake = asyncio.Event()
        self._ae_joined: set[str] = set()
        self._departed: dict[str, float] = {}  # replica node -> wall time it left (hinted handoff)
        self._hints: dict[str, str] = {}  # key held here as a stand-in -> the node it is meant for
        self._inflight: dict[str, asyncio.Future[Any]] = {}  # key -> replication a waiting put started
        self._waiters: dict[str, list[tuple[int, asyncio.Future[int]]]] = {}  # key -> (replicas needed, future)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._wake = asyncio.Event()
        self._repair_wanted = False
        self._joined: set[str] = set()
        self._idle_retry: tuple[frozenset[str], int] | None = None
        self.counters = dict.fromkeys(
            ("replicated", "copies_stored", "copies_refused", "repaired", "synced", "adopted", "refused_reads",
             "deferred", "dropped", "tombstones_applied", "hinted", "handed_off"), 0)

    # -- wiring ---------------------------------------------------------------------------------

    def now_ms(self) -> int:
        return self._clock()

    def start(self) -> None:
        """Listen to the cache and the peer table; start the workers and the maintenance loop."""
        self.tombstones.max_count = self.manager.max_entries
        self._loop = asyncio.get_running_loop()
        self.manager.add_listener(self)
        self.peers.subscribe(self.on_peer)
        self._tasks = [asyncio.create_task(self._worker(), name=f"replication-worker-{i}") for i in range(WORKERS)]
        self._tasks.append(asyncio.create_task(self._maintain(), name="replication-maintenance"))
        self._tasks.append(asyncio.create_task(self._anti_entropy_loop(), name="anti-entropy"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self.manager.remove_listener(self)

    def shortfall(self) -> int:
        """Entries this node is primary of that have fewer than N acknowledged live replicas."""
        return len(self._short) if self.replica_count else 0

    def stats(self) -> dict[str, int]:
        return {**self.counters, "queued": len(self.queue), "shortfall": self.shortfall(), "owned": len(self._acks),
                "tombstones": len(self.tombstones), "tombstone_bytes": self.tombstones.bytes, "hints": len(self._hints),
                **{f"anti_entropy_{k}": v for k, v in self.anti_entropy.counters.items()}}

    # -- peers ----------------------------------------------------------------------------------

    def live_replica_ids(self) -> list[str]:
        """Peers that can hold copies now: the ``replica`` role, a gRPC address, not mobile."""
        return [r.node_id for r in self.peers.with_role("replica")
                if r.address and r.info.kind != common_pb2.NODE_KIND_MOBILE]

    def placement(self, key: str, primary: str | None = None) -> list[str]:
        """The live replica peers in ``key``'s rendezvous order, without the primary (this node by default)."""
        primary = self.node_id if primary is None else primary
        return [n for n in rank(key, self.live_replica_ids()) if n != primary]

    def name_of(self, node_id: str) -> tuple[str, str]:
        """``(name, address)`` of a node; a node no longer in the table is named by its id."""
        if node_id == self.node_id:
            return self.self_name, self.self_address
        record = self.peers.get(node_id)
        return (record.info.name, record.address) if record is not None else (node_id, "")

    def on_peer(self, event: str, record: PeerRecord) -> None:
        """PeerTable listener: a departure asks for a repair pass, an arrival for a sync."""
        if "replica" not in record.info.roles or record.info.kind == common_pb2.NODE_KIND_MOBILE:
            return
        if event == "left":
            # Its copies are gone with it (a node that restarts fast is also "left" first):
            # forget its acks now, or a sync on its return would think it still holds them.
            for holders in self._acks.values():
                holders.discard(record.node_id)
            self._repair_wanted = True
            self._joined.discard(record.node_id)
            self._departed[record.node_id] = time.time()
            while len(self._departed) > MAX_DEPARTED:
                del self._departed[min(self._departed, key=self._departed.__getitem__)]
        elif event == "joined":
            self._joined.add(record.node_id)
            self._departed.pop(record.node_id, None)
        self._wake.set()

    def _stub(self, node_id: str) -> replica_pb2_grpc.ReplicaAsyncStub | None:
        record = self.peers.get(node_id)
        if record is None or not record.address:
            return None
        return replica_pb2_grpc.ReplicaStub(self.channels.get(record.address))

    # -- the cache's listener -------------------------------------------------------------------

    def _call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        call_in_loop(loop, fn, *args)

    def on_put(self, entry: CacheEntry) -> None:
        if self.replica_count and self._owns(entry):
            self._call_soon(self._enqueue_put, entry.key, entry.critical, entry.hits)

    def _enqueue_put(self, key: str, critical: bool, hits: int) -> None:
        # A local put may replace the entry: copies acknowledged before hold the old one.
        # It is also newer than any delete of its key.
        self._acks[key] = set()
        self.tombstones.discard(key)
        self._hints.pop(key, None)
        self._enqueue(key, critical, hits)

    def on_delete(self, key: str, reason: str) -> None:
        self._call_soon(self._forget, key, reason, None)

    def on_removed(self, meta: EntryMeta, reason: str) -> None:
        self._call_soon(self._forget, meta.key, reason, meta)

    def _owns(self, entry: EntryMeta) -> bool:
        return entry.primary_node_id in ("", self.node_id)

    def _enqueue(self, key: str, critical: bool, hits: int) -> None:
        self._acks.setdefault(key, set())
        self._short.add(key)
        left_out = self.queue.offer(key, (critical, hits))
        if left_out is not None:
            self.counters["deferred"] += 1  # stays in the shortfall; the retry loop replicates it

    def bury(self, key: str) -> None:
        """A delete of a key this node does not hold: a copy may live elsewhere, so bury it everywhere."""
        if self.manager.get_entry(key) is None:
            self._forget(key, "deleted", None, force=True)

    def _forget(self, key: str, reason: str, meta: EntryMeta | None = None, force: bool = False) -> None:
        holders = self._acks.pop(key, None) or set()
        self._short.discard(key)
        self.queue.discard(key)
        self._hints.pop(key, None)
        if reason != "deleted" or self.manager.get_entry(key) is not None:
            return
        now = self._clock()
        known = self.tombstones.get(key, now)
        if not force and known is not None and (meta is None or known.kills(meta.created_unix_ms)):
            return  # a delete heard from another node: it spread it already
        # A delete made here: bury the key until the entry would have expired, and tell every
        # node that may hold a copy. Anti-entropy carries the tombstone to those that miss it.
        expires = meta.expires_unix_ms if meta is not None else now + int(self.manager.ttl_s * 1000)
        stone = Tombstone(key, max(now, meta.created_unix_ms if meta else 0), expires,
                          meta.primary_node_id if meta else "")
        self.tombstones.add(stone, now)
        if not self.replica_count:
            return
        live = self.live_replica_ids()
        targets = holders | set(place(key, live, self.replica_count)) | set(
            responsible(key, [*live, self.node_id], self.replica_count + 1))
        if meta is not None and meta.primary_node_id in live:
            targets.add(meta.primary_node_id)
        targets.discard(self.node_id)
        if targets:
            self._spawn(self._drop_copies(key, targets, stone))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _drop_copies(self, key: str, targets: set[str], stone: Tombstone | None = None) -> None:
        request = replica_pb2.DropRequest(keys=[key], sender_node_id=self.node_id,
                                          tombstones=[stone.to_proto()] if stone else [])

        async def drop(node_id: str) -> None:
            stub = self._stub(node_id)
            if stub is not None:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await guarded(stub.Drop(request, timeout=DROP_TIMEOUT_S))

        await asyncio.gather(*(drop(n) for n in targets))

    # -- writing copies -------------------------------------------------------------------------

    def _entry_for(self, key: str, value: CacheEntry | str) -> CacheEntry:
        if isinstance(value, CacheEntry):
            if value.key != key:
                raise ValueError(f"entry {value.key[:12]}… is not the entry for key {key[:12]}…")
            return value
        entry = self.manager.get_entry(key)
        if entry is None or entry.response != value:
            raise ValueError(f"no live entry {key[:12]}… with that value in this node's cache")
        return entry

    async def _store(self, node_id: str, entry: common_pb2.CacheEntry, hint_for: str = "") -> bool:
        stub = self._stub(node_id)
        if stub is None:
            return False
        try:
            reply = await guarded(stub.Store(replica_pb2.StoreRequest(entry=entry, sender_node_id=self.node_id,
                                                                      hint_for_node_id=hint_for),
                                             timeout=STORE_TIMEOUT_S))
        except grpc.aio.AioRpcError as err:
            log.debug("store of %s on %s failed: %s", entry.key[:12], node_id, err.code())
            return False
        if not reply.accepted:
            log.info("%s refused a copy of %s: %s", node_id, entry.key[:12], reply.reason)
        elif hint_for:
            self.counters["hinted"] += 1
        return reply.accepted

    def _record(self, key: str, acked: Iterable[str]) -> None:
        """Note acknowledged copies of an owned entry and whether it still falls short."""
        if key not in self._acks:
            if self.manager.get_entry(key) is None:
                return  # deleted meanwhile
            self._acks[key] = set()
        holders = self._acks[key]
        holders.update(acked)
        holders &= set(self.live_replica_ids())
        if len(holders) >= self.replica_count:
            self._short.discard(key)
        else:
            self._short.add(key)

    async def replicate(self, key: str, value: CacheEntry | str, num_replicas: int | None = None,
                        final: bool = True) -> list[str]:
        """Make sure ``num_replicas`` (default N) live replica peers hold ``key``; returns those that do.

        Tries the entry's placement first and walks down the ranking past nodes that fail
        or refuse. ``value`` is the entry, or its response text (then the entry is read
        from this node's cache and must hold exactly that value).
        """
        wanted = self.replica_count if num_replicas is None else num_replicas
        entry = self._entry_for(key, value)
        proto = entry.to_proto()
        live = set(self.live_replica_ids())
        holders = self._acks.setdefault(key, set()) if self._owns(entry) else set()
        holders &= live
        primary = entry.primary_node_id or self.node_id
        candidates = [n for n in self.placement(key, primary) if n not in holders]
        hints = self._stand_ins(key, primary, live, wanted)

        async def store(node_id: str) -> None:
            if await self._store(node_id, proto, hints.get(node_id, "")):
                holders.add(node_id)  # at once, not after the wave: a put waiting for W acks returns sooner
                self._wake_waiters(key, len(holders))

        while len(holders) < wanted and candidates:
            wave, candidates = candidates[: wanted - len(holders)], candidates[wanted - len(holders):]
            await asyncio.gather(*(store(n) for n in wave))
        if final:
            self.counters["replicated"] += 1
        if self._owns(entry):
            self._record(key, holders)
        self._wake_waiters(key, len(holders), done=final)
        return sorted(holders)

    async def _replicate_acked_first(self, key: str, entry: CacheEntry, need: int) -> list[str]:
        """The ``need`` copies a waiting put needs first, one wave to just that many nodes; then
        the rest. Sending every copy at once would make the put wait behind the extra ones'
        serialisation and replies, for nothing."""
        if 0 < need < self.replica_count:
            await self.replicate(key, entry, num_replicas=need, final=False)
        return await self.replicate(key, entry)

    def _stand_ins(self, key: str, primary: str, live: set[str], wanted: int) -> dict[str, str]:
        """Hinted handoff: live node -> the departed node of ``key``'s placement it stands in for.

        The placement over live and recently departed replica nodes says where copies belong;
        its departed members are replaced, in ranking order, by the next live nodes, which
        get the copy with a hint naming the owner and hand it over when the owner is back.
        """
        now = time.time()
        departed = {n for n, t in self._departed.items() if now - t < HINT_WINDOW_S and n not in live}
        if not departed:
            return {}
        intended = place(key, live | departed, wanted, exclude=[primary])
        owners = [n for n in intended if n in departed]
        stand_ins = [n for n in place(key, live, len(live), exclude=[primary]) if n not in intended]
        return dict(zip(stand_ins, owners, strict=False))

    # -- acknowledged writes (W) ----------------------------------------------------------------

    def copies_target(self) -> int:
        """Copies the mesh keeps of an entry: the primary plus N."""
        return 1 + self.replica_count

    def write_acks_for(self, wanted: int | None = None) -> int:
        """W for a put: ``wanted`` (None: this node's ``write_acks``; 0: all) capped at N+1."""
        w = self.write_acks if wanted is None else wanted
        return self.copies_target() if w <= 0 else min(w, self.copies_target())

    def _wake_waiters(self, key: str, replicas: int, done: bool = False) -> None:
        waiters = self._waiters.get(key)
        if not waiters:
            return
        for need, future in list(waiters):
            if (replicas >= need or done) and not future.done():
                future.set_result(replicas)
        self._waiters[key] = [(n, f) for n, f in waiters if not f.done()]
        if not self._waiters[key]:
            del self._waiters[key]

    async def confirm_copies(self, entry: CacheEntry, timeout_s: float) -> tuple[int, int, int]:
        """The cache's wait after a put (``cache.hooks.PeerSource``): ``(copies, N+1, W)``."""
        copies, acks = await self.replicate_acked(entry, timeout_s)
        return copies, self.copies_target(), acks

    async def replicate_acked(self, entry: CacheEntry, timeout_s: float, wanted: int | None = None
                              ) -> tuple[int, int]:
        """Replicate a fresh put now and wait until W copies are verified (this node's counts as one).

        Returns ``(copies, W)``: the copies verified when W was reached, when every candidate
        answered, or when ``timeout_s`` passed, whichever came first. Replication to N
        replicas goes on in the background either way (then the shortfall retry), so a put
        that returns short of W is not abandoned.
        """
        w = self.write_acks_for(wanted)
        key = entry.key
        if not self.replica_count or not self._owns(entry):
            return 1, w
        self.queue.discard(key)  # replicated here and now, not by a worker
        task = self._inflight.get(key)
        if task is None or task.done():
            task = asyncio.ensure_future(self._replicate_acked_first(key, entry, w - 1))
            self._inflight[key] = task

            def finished(t: asyncio.Future[Any], k: str = key) -> None:
                if self._inflight.get(k) is t:
                    del self._inflight[k]
                if not t.cancelled() and t.exception() is not None:
                    log.warning("replicating %s failed: %s", k[:12], t.exception())

            task.add_done_callback(finished)
        need = w - 1
        live = set(self.live_replica_ids())
        held = len(self._acks.get(key, set()) & live)
        if held < need and live:
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(key, []).append((need, future))
            try:
                await asyncio.wait_for(asyncio.shield(future), timeout=max(0.0, timeout_s))
            except TimeoutError:
                pass
            finally:
                if not future.done():
                    future.cancel()
                    self._wake_waiters(key, -1)  # prunes the cancelled waiter
        return 1 + len(self._acks.get(key, set()) & set(self.live_replica_ids())), w

    def get_replicas(self, key: str) -> list[str]:
        """The live nodes that acknowledged a copy of an entry this node is primary of."""
        live = set(self.live_replica_ids())
        return sorted(self._acks.get(key, set()) & live)

    async def sync_to_node(self, node_id: str, entries: Iterable[CacheEntry | EntryMeta | str]) -> list[str]:
        """Stream ``entries`` (hottest first) to ``node_id`` with ``Replica.Sync``; returns the keys it holds now.

        Keys and metadata are read from this node's cache batch by batch (entries gone
        meanwhile are skipped); whole ``CacheEntry`` objects are sent as given. A call
        carries at most ``SYNC_CALL_MAX_ENTRIES`` in batches of ``SYNC_BATCH_ENTRIES`` /
        ``SYNC_BATCH_BYTES``; the next call resumes after the ``last_key`` the receiver
        reported, and a failed call is retried from the last confirmed key
        (``SYNC_ATTEMPTS`` in a row at most).
        """
        items = list(entries)
        stub = self._stub(node_id)
        if stub is None or not items:
            return []
        acked: list[str] = []
        done = failures = 0
        while done < len(items):
            chunk = items[done: done + SYNC_CALL_MAX_ENTRIES]
            sent: list[str] = []
            try:
                reply = await self._unless_gone(node_id, stub.Sync(self._sync_requests(chunk, sent),
                                                                   timeout=SYNC_CALL_TIMEOUT_S))
            except PeerGone:
                log.info("sync to %s stopped after %d of %d entries: it left", node_id, done, len(items))
                break
            except grpc.aio.AioRpcError as err:
                failures += 1
                if failures >= SYNC_ATTEMPTS or not retryable(err) or self.peers.get(node_id) is None:
                    log.info("sync to %s stopped after %d of %d entries: %s", node_id, done, len(items), err.code())
                    break
                await asyncio.sleep(0.2 * failures)
                continue
            if not sent:
                done += len(chunk)  # nothing in this chunk was still alive to send
                continue
            if reply.last_key not in sent:
                failures += 1
                if failures >= SYNC_ATTEMPTS:
                    break
                continue
            failures = 0
            processed = sent[: sent.index(reply.last_key) + 1]
            if reply.rejected:
                processed = await self._store_each(node_id, processed)  # learn which ones it refused
            acked.extend(processed)
            for key in processed:
                if key in self._acks:
                    self._record(key, [node_id])
            done += self._position_after(chunk, reply.last_key)
        self.counters["synced"] += len(acked)
        return acked

    async def _unless_gone(self, node_id: str, call: Awaitable[T]) -> T:
        """Await ``call``, but give up (``PeerGone``) as soon as ``node_id`` leaves the peer table.

        A frozen peer (SIGSTOP, a partition) accepts a call and never answers: without this,
        one long call to it would hold this node's maintenance for the whole call timeout.
        """
        task = asyncio.ensure_future(guarded(call))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=GONE_CHECK_S)
                if done:
                    return task.result()
                if self.peers.get(node_id) is None:
                    raise PeerGone(node_id)
        finally:
            if not task.done():
                task.cancel()

    @staticmethod
    def _position_after(chunk: list[CacheEntry | EntryMeta | str], last_key: str) -> int:
        for i, item in enumerate(chunk):
            if (item if isinstance(item, str) else item.key) == last_key:
                return i + 1
        return len(chunk)

    async def _sync_requests(self, chunk: list[CacheEntry | EntryMeta | str], sent: list[str]
                             ) -> AsyncIterator[replica_pb2.SyncRequest]:
        batch: list[common_pb2.CacheEntry] = []
        size = 0
        now = self._clock()
        for item in chunk:
            if isinstance(item, CacheEntry):
                entry: CacheEntry | None = item
            else:
                entry = self.manager.get_entry(item if isinstance(item, str) else item.key)
            if entry is None or entry.expired(now):
                continue
            proto = entry.to_proto()
            length = proto.ByteSize()
            if batch and (len(batch) >= SYNC_BATCH_ENTRIES or size + length > SYNC_BATCH_BYTES):
                yield replica_pb2.SyncRequest(sender_node_id=self.node_id, entries=batch)
                batch, size = [], 0
            batch.append(proto)
            sent.append(entry.key)
            size += length
        if batch:
            yield replica_pb2.SyncRequest(sender_node_id=self.node_id, entries=batch)

    async def _store_each(self, node_id: str, keys: list[str]) -> list[str]:
        kept = []
        for key in keys:
            entry = self.manager.get_entry(key)
            if entry is not None and await self._store(node_id, entry.to_proto()):
                kept.append(key)
        return kept

    # -- receiving copies (the Replica service) -------------------------------------------------

    def accept_copy(self, proto: common_pb2.CacheEntry, sender: str, live: set[str] | None = None,
                    hint_for: str = "") -> tuple[bool, str]:
        """Keep a copy sent by ``sender``: ``(held now, why not)``.

        What a peer says is checked, not believed (issue 16: a peer could overwrite an honest
        copy with a self-consistent forgery):

        * the copy is verified (key and checksum) and obeys this node's limits, and its times
          are capped by this node's clock (``put_entry``: expiry at most now + max TTL);
        * a copy naming this node its primary is refused unless this node holds that answer, or
          the copy was made before this process started: this node put it in an earlier life
          and lost it in a restart (an empty cache), and its replicas hand it back;
        * only the entry's primary replaces the answer held here; a relayed copy (the sender
          is not the primary it names: a hand-over, a hint, anti-entropy) is stored where none
          is held, and where the same answer is held only refreshes newer times;
        * a primary that claims an entry held here from another primary (a takeover) is
          believed only when that primary is gone and the claimant is the first node of the
          key's rendezvous ranking, the one ``_successor`` picks.

        A copy whose primary is gone may be taken over here.
        """
        claimed = proto.primary_node_id
        if not sender or not claimed:
            return self._refuse(proto.key, "the copy names no sender or no primary")
        if claimed == self.node_id and sender != self.node_id:
            held = self.manager.get_entry(proto.key)
            earlier_life = held is None and 0 < proto.created_unix_ms < self.started_unix_ms
            if not earlier_life and (held is None or held.checksum != proto.checksum):
                return self._refuse(proto.key, f"{sender} sent a copy naming this node its primary, "
                                               "which it does not hold")
        try:
            entry = CacheEntry.from_proto(proto)
        except InvalidParams as exc:
            return self._refuse(proto.key, f"unusable params: {exc}")
        stone = self.tombstones.get(entry.key, self._clock())
        if stone is not None:
            if stone.kills(entry.created_unix_ms):
                return self._refuse(entry.key, "deleted: a copy made before a delete is never stored again")
            self.tombstones.discard(entry.key)  # a newer answer than the deleted one
        existing = self.manager.get_entry(entry.key)
        from_primary = sender == claimed
        now = self.manager.now_ms()
        times = (min(entry.created_unix_ms, now), min(entry.expires_unix_ms, now + int(self.manager.max_ttl_s * 1000)))
        if existing is None:
            keep_ours = False
        elif from_primary and existing.primary_node_id != claimed:  # a takeover
            refused = self._takeover_refused(existing, sender, live, same_answer=existing.checksum == entry.checksum)
            if refused:
                return self._refuse(entry.key, refused)
            keep_ours = False
        elif existing.checksum == entry.checksum:  # the same answer: the primary's metadata, else newer times
            keep_ours = existing.expires_unix_ms == times[1] if from_primary else (
                existing.primary_node_id != claimed
                or (existing.created_unix_ms, existing.expires_unix_ms) >= times)
        else:  # another answer: only its primary replaces the one held here
            keep_ours = not from_primary
        if not keep_ours:
            try:
                stored = self.manager.put_entry(entry, notify=False)
            except (InvalidCacheRequest, InvalidParams, StoreUnavailable) as exc:
                return self._refuse(entry.key, str(exc))
            if stored is None:
                return self._refuse(entry.key, "expired: an expired entry is never stored again")
            self.counters["copies_stored"] += 1
            existing = stored
        assert existing is not None
        if hint_for and hint_for != self.node_id and len(self._hints) < self.manager.max_entries:
            self._hints[existing.key] = hint_for
        if self._owns(existing):
            if self.replica_count:
                self._enqueue(existing.key, existing.critical, existing.hits)  # our own entry came back
        else:
            if existing.key in self._acks:  # another node's write replaced ours: it is the owner now
                self._acks.pop(existing.key)
                self._short.discard(existing.key)
                self.queue.discard(existing.key)
            if existing.primary_node_id != sender:  # a primary sending its own entry is alive, known or not
                self._maybe_adopt(existing, live)
        return True, ""

    def _takeover_refused(self, existing: EntryMeta, sender: str, live: set[str] | None,
                          same_answer: bool = False) -> str:
        """Why ``sender`` may not become the primary of ``existing`` ("" when it may).

        Two live nodes can both claim one entry: a primary paused past the peer timeout comes
        back to find its successor took the entry over, or a node joins that ranks before the
        successor that adopted an entry and adopts it too. Each then refused the other's copy
        for good, and both retried forever. When their answer is the same, the pair's
        rendezvous ranking decides, alike on both sides: the first keeps the entry and the
        other, given its copy, becomes a replica. A different answer never replaces the held
        one this way (a forgery from a live peer stays refused).
        """
        primary = existing.primary_node_id
        if primary == self.node_id or (primary and self.peers.get(primary) is not None):
            if same_answer and rank(existing.key, [primary, sender])[0] == sender:
                return ""
            return (f"{sender} claims the entry, but its primary {primary} is alive: only the primary "
                    "replaces a copy")
        live = set(self.live_replica_ids()) if live is None else live
        first = rank(existing.key, live | {self.node_id, sender})[0]
        if first != sender:
            return (f"{sender} claims the entry of departed primary {primary or '?'}, but {first} is first in "
                    "its rendezvous ranking and takes it over")
        return ""

    def _refuse(self, key: str, reason: str) -> tuple[bool, str]:
        self.counters["copies_refused"] += 1
        log.warning("refused a copy of %s: %s", key[:12], reason)
        return False, reason

    def accept_batch(self, protos: list[common_pb2.CacheEntry], sender: str) -> tuple[int, int]:
        """``accept_copy`` for a sync call's entries, coldest first so the hottest end up most
        recently used (kept longest by LRU). Returns ``(stored, rejected)``."""
        live = set(self.live_replica_ids())
        stored = rejected = 0
        for proto in reversed(protos):
            ok, _ = self.accept_copy(proto, sender, live)
            if ok:
                stored += 1
            else:
                rejected += 1
        return stored, rejected

    def accept_tombstones(self, stones: Iterable[replica_pb2.Tombstone]) -> int:
        """Keep these tombstones and remove the copies they bury; returns how many copies went."""
        now = self._clock()
        removed = 0
        for proto in stones:
            stone = Tombstone.from_proto(proto)
            if len(stone.key) != 64 or not self.tombstones.add(stone, now):
                continue
            self.counters["tombstones_applied"] += 1
            entry = self.manager.get_entry(stone.key)
            if entry is not None and stone.kills(entry.created_unix_ms) and self.manager.delete(stone.key):
                removed += 1
        return removed

    async def push_tombstones(self, node_id: str, stones: list[Tombstone]) -> bool:
        """Send tombstones to a peer (``Replica.Sync`` with no entries), in bounded messages."""
        stub = self._stub(node_id)
        if stub is None or not stones:
            return False

        async def requests() -> AsyncIterator[replica_pb2.SyncRequest]:
            for i in range(0, len(stones), 1024):
                yield replica_pb2.SyncRequest(sender_node_id=self.node_id,
                                              tombstones=[t.to_proto() for t in stones[i: i + 1024]])

        try:
            await self._unless_gone(node_id, stub.Sync(requests(), timeout=SYNC_CALL_TIMEOUT_S))
        except PeerGone:
            return False
        except grpc.aio.AioRpcError as err:
            log.debug("tombstones to %s failed: %s", node_id, err.code())
            return False
        return True

    def drop_copies(self, keys: Iterable[str], sender: str, stones: Iterable[replica_pb2.Tombstone] = ()) -> int:
        """Apply ``stones``, and remove the copies of ``keys`` whose primary is ``sender``; returns how many went."""
        dropped = self.accept_tombstones(stones)
        for key in keys:
            entry = self.manager.get_entry(key)
            if entry is not None and sender and entry.primary_node_id == sender and self.manager.delete(key):
                dropped += 1
        self.counters["dropped"] += dropped
        return dropped

    def _primary_gone(self, entry: EntryMeta) -> bool:
        primary = entry.primary_node_id
        return bool(primary) and primary != self.node_id and self.peers.get(primary) is None

    def _successor(self, key: str, live: set[str]) -> str:
        """The node that takes over an entry whose primary is gone: the first of its ranking."""
        return rank(key, live | {self.node_id})[0]

    def _maybe_adopt(self, entry: EntryMeta, live: set[str] | None = None) -> bool:
        if not self.replica_count or not self._primary_gone(entry):
            return False
        live = set(self.live_replica_ids()) if live is None else live
        if self._successor(entry.key, live) != self.node_id:
            return False
        return self._adopt(entry)

    def _adopt(self, meta: EntryMeta) -> bool:
        entry = self.manager.get_entry(meta.key)
        if entry is None:
            return False
        try:
            mine = self.manager.put_entry(dataclasses.replace(entry, primary_node_id=self.node_id), notify=False)
        except (InvalidCacheRequest, StoreUnavailable) as exc:
            log.warning("could not take over %s: %s", meta.key[:12], exc)
            return False
        if mine is None:
            return False
        log.info("took over entry %s from departed primary %s", meta.key[:12], meta.primary_node_id)
        self.counters["adopted"] += 1
        self._enqueue(mine.key, mine.critical, mine.hits)
        return True

    # -- reading copies -------------------------------------------------------------------------

    async def fetch_verified(self, node_id: str, key: str) -> CacheEntry | None:
        """``node_id``'s copy of ``key`` when it has a live, intact one; a bad copy is refused and logged."""
        stub = self._stub(node_id)
        if stub is None:
            return None
        try:
            reply = await guarded(stub.Fetch(replica_pb2.FetchRequest(key=key), timeout=FETCH_TIMEOUT_S))
        except grpc.aio.AioRpcError:
            return None
        if not reply.found:
            return None
        try:
            return verify_copy(reply.entry, key, self._clock())
        except RefusedCopy as exc:
            self.counters["refused_reads"] += 1
            log.warning("refused the copy of %s from %s: %s", key[:12], node_id, exc)
            return None

    async def read_through(self, key: str) -> tuple[CacheEntry, str] | None:
        """A verified copy of ``key`` from a replica: the placement's first N+1 in order, then all others."""
        order = self.placement(key, primary="")
        first, rest = order[: self.replica_count + 1], order[self.replica_count + 1:]
        stone = self.tombstones.get(key, self._clock())

        def alive(entry: CacheEntry | None) -> bool:  # a copy a delete here buried is not an answer
            return entry is not None and (stone is None or not stone.kills(entry.created_unix_ms))

        for node_id in first:
            entry = await self.fetch_verified(node_id, key)
            if alive(entry):
                assert entry is not None
                return entry, node_id
        found = await asyncio.gather(*(self.fetch_verified(n, key) for n in rest))
        for node_id, entry in zip(rest, found, strict=True):
            if alive(entry):
                assert entry is not None
                return entry, node_id
        return None

    def semantic_peers(self) -> int:
        return min(len(self.live_replica_ids()), SEARCH_FANOUT)

    async def semantic_search(self, request: replica_pb2.SearchRequest) -> AsyncGenerator[tuple[CacheEntry, str], None]:
        """Ask the live replica peers (at most ``SEARCH_FANOUT``, at once) for an entry that means
        the same as ``request``'s question; yields each verified copy found, with the node it came
        from, as the answers arrive (the caller may stop at the first it accepts: the calls still
        out are cancelled). The caller judges them (``cache.semantic.mesh_search.judge``): a peer
        is not trusted."""
        request.sender_node_id = self.node_id

        async def ask(node_id: str) -> tuple[CacheEntry | None, str]:
            stub = self._stub(node_id)
            if stub is None:
                return None, node_id
            try:
                reply = await guarded(stub.Search(request, timeout=SEARCH_TIMEOUT_S))
            except grpc.aio.AioRpcError:
                return None, node_id  # down, slow, or an older node without Search: a miss there
            if not reply.found:
                return None, node_id
            try:
                return verify_copy(reply.entry, reply.entry.key, self._clock()), node_id
            except RefusedCopy as exc:
                self.counters["refused_reads"] += 1
                log.warning("refused a semantic match from %s: %s", node_id, exc)
                return None, node_id

        calls = [asyncio.ensure_future(ask(n)) for n in self.live_replica_ids()[:SEARCH_FANOUT]]
        try:
            for done in asyncio.as_completed(calls):
                entry, node_id = await done
                if entry is not None:
                    yield entry, node_id
        finally:
            for call in calls:
                call.cancel()

    async def locate(self, key: str) -> Location:
        """Ask every live replica node (and this one) for a verified copy of ``key``."""
        holders: dict[str, CacheEntry] = {}
        local = self.manager.get_entry(key)
        if local is not None:
            holders[self.node_id] = local
        others = self.placement(key, primary="")
        copies = await asyncio.gather(*(self.fetch_verified(n, key) for n in others))
        holders.update({n: e for n, e in zip(others, copies, strict=True) if e is not None})
        primary = next((e.primary_node_id for e in holders.values() if e.primary_node_id in holders), "")
        replicas = [n for n in rank(key, holders) if n != primary]
        candidates = [*self.live_replica_ids(), self.node_id]
        placement = place(key, candidates, self.replica_count, exclude=[primary] if primary else [])
        return Location(key=key, primary=primary, replicas=replicas, placement=placement)

    # -- background -----------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            if key in self._inflight:
                continue  # a put waiting for its acks is replicating it already
            entry = self.manager.get_entry(key)
            if entry is None or not self._owns(entry):
                self._short.discard(key)
                continue
            try:
                await self.replicate(key, entry)
            except asyncio.CancelledError:
                if being_cancelled():
                    raise
                log.warning("replicating %s was cut short", key[:12])
            except Exception:
                log.exception("replicating %s failed", key[:12])

    async def _maintain(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.retry_s)
            self._wake.clear()
            try:
                if self._repair_wanted:
                    self._repair_wanted = False
                    await self.repair()
                joined, self._joined = self._joined, set()
                if joined:
                    self._ae_joined |= joined
                    self._ae_wake.set()
                for node_id in sorted(joined):
                    await self.sync_joined(node_id)
                    await self.hand_off(node_id)
                if self._short:
                    await self.retry_short()
                self.tombstones.sweep(self._clock())
            except asyncio.CancelledError:
                if being_cancelled():
                    raise
                log.warning("a replication maintenance round was cut short")
            except Exception:  # a bug here must not end maintenance for good
                log.exception("replication maintenance failed")

    async def _anti_entropy_loop(self) -> None:
        """Anti-entropy in its own task: every period, and at once toward peers that (re)joined.

        Apart from maintenance so that a slow repair or sync never delays it (and the reverse).
        """
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ae_wake.wait(), timeout=self.anti_entropy.period_s)
            self._ae_wake.clear()
            joined, self._ae_joined = self._ae_joined, set()
            try:
                if joined and time.monotonic() - self._last_anti_entropy < self.anti_entropy.period_s:
                    await self.anti_entropy.run_round(sorted(joined))
                else:
                    self._last_anti_entropy = time.monotonic()
                    await self.anti_entropy.run_round()
            except asyncio.CancelledError:
                if being_cancelled():
                    raise
                log.warning("an anti-entropy round was cut short")
            except Exception:  # a bug here must not end anti-entropy for good
                log.exception("anti-entropy round failed")

    def _plan_owned(self, key: str, live: set[str], plan: dict[str, list[str]]) -> None:
        holders = self._acks.setdefault(key, set())
        holders &= live
        missing = self.replica_count - len(holders)
        if missing <= 0:
            self._short.discard(key)
            return
        self._short.add(key)
        for node_id in [n for n in rank(key, live) if n not in holders and n != self.node_id][:missing]:
            plan.setdefault(node_id, []).append(key)

    async def _push(self, plan: dict[str, list[str]]) -> int:
        results = await asyncio.gather(*(self.sync_to_node(n, keys) for n, keys in plan.items()))
        return sum(len(r) for r in results)

    async def repair(self) -> int:
        """After a departure: restore N replicas of owned entries, take over or hand over orphans.

        Hottest first. Returns the number of copies pushed.
        """
        if not self.replica_count:
            return 0
        live = set(self.live_replica_ids())
        plan: dict[str, list[str]] = {}
        handover: dict[str, list[str]] = {}
        for meta in self.manager.describe(hottest_first=True):
            if self._primary_gone(meta):
                successor = self._successor(meta.key, live)
                if successor != self.node_id:
                    handover.setdefault(successor, []).append(meta.key)
                    continue
                if not self._adopt(meta):
                    continue
            elif not self._owns(meta):
                continue  # a copy for a live primary: repairing it is that primary's job
            if meta.key not in self.queue:
                self._plan_owned(meta.key, live, plan)
        pushed = await self._push(plan)
        handed = await asyncio.gather(*(self.sync_to_node(n, keys) for n, keys in handover.items()))
        self.counters["repaired"] += pushed
        if pushed or handover:
            log.info("repair pushed %d copies and handed %d orphaned entries to their successors",
                     pushed, sum(len(h) for h in handed))
        return pushed

    async def sync_joined(self, node_id: str) -> int:
        """Stream a (re)joined peer the owned entries it should hold now, hottest first."""
        live = set(self.live_replica_ids())
        if not self.replica_count or node_id not in live:
            return 0
        keys = []
        for meta in self.manager.describe(hottest_first=True):
            if not self._owns(meta) or meta.key in self.queue:
                continue
            holders = self._acks.setdefault(meta.key, set())
            holders &= live
            if node_id in holders:
                continue
            ideal = place(meta.key, live, self.replica_count, exclude=[self.node_id])
            fill = [n for n in rank(meta.key, live) if n not in holders and n != self.node_id]
            if node_id in ideal or node_id in fill[: self.replica_count - len(holders)]:
                keys.append(meta.key)
        acked = await self.sync_to_node(node_id, keys)
        if keys:
            log.info("synced %d of %d entries to %s", len(acked), len(keys), node_id)
        return len(acked)

    async def hand_off(self, node_id: str) -> int:
        """Hinted handoff: give a returned node the copies held here for it, then drop the stand-in copies.

        A stand-in keeps its copy when it now belongs to the key's placement itself (or is its
        primary). Returns the number of copies handed over.
        """
        keys = [k for k, owner in self._hints.items() if owner == node_id]
        if not keys:
            return 0
        held = await self.sync_to_node(node_id, keys)
        live = set(self.live_replica_ids())
        for key in held:
            self._hints.pop(key, None)
            entry = self.manager.get_entry(key)
            if entry is None or entry.primary_node_id == self.node_id:
                continue
            if self.node_id not in place(key, live | {self.node_id}, self.replica_count,
                                         exclude=[entry.primary_node_id]):
                self.manager.delete(key, reason="handed_off")
        self.counters["handed_off"] += len(held)
        log.info("handed %d hinted copies over to %s", len(held), node_id)
        return len(held)

    async def retry_short(self) -> int:
        """Try again for owned entries still short of N replicas, hottest first (bounded per round)."""
        live = set(self.live_replica_ids())
        signature = (frozenset(live), len(self._short))
        if not live or signature == self._idle_retry:
            return 0  # nothing changed since a round that found no node to try
        plan: dict[str, list[str]] = {}
        looked = 0
        for meta in self.manager.describe(hottest_first=True):
            if meta.key not in self._short or meta.key in self.queue or not self._owns(meta):
                continue
            self._plan_owned(meta.key, live, plan)
            looked += 1
            if looked >= RETRY_BATCH:
                break
        self._idle_retry = None if plan else signature
        return await self._push(plan) if plan else 0
