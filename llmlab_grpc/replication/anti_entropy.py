"""Anti-entropy: replica nodes compare what they hold and move only the differences.

Pushes by primaries (``replicator.py``) miss what happens while a node is away, cut off
or frozen: a write made on the other side of a partition, a delete it never heard of, a
primary that died before its queue drained. So every ``anti_entropy_s`` seconds, and at
once when a peer (re)joins, each replica node runs a **round** toward each live replica
peer:

1. it hashes the items (key, expiry, version; entries and tombstones) of the keys both
   should hold into ``digest.BUCKETS`` bucket hashes and sends them (``Replica.Digest``,
   about 2 KB whatever the number of entries);
2. the peer hashes its own, and answers with the buckets that differ and its items in
   them (at most ``MAX_DIGEST_ITEMS``);
3. the initiator pushes what it has that the peer lacks or holds an older version of:
   entries with ``Replica.Sync``, tombstones with ``Replica.Sync``'s ``tombstones``.
   What the peer has newer, the peer pushes in its own round (every node runs them).

Expired entries and tombstones are never hashed nor sent, so nothing expired comes back;
a copy older than a tombstone is refused by the receiver, so nothing deleted does either.

Bounds: one round at a time; at most ``MAX_PUSH_PER_PEER`` entries pushed to a peer per
round (the rest next round); hashing runs in a worker thread (the event loop keeps
serving) over one snapshot of the cache's metadata.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import grpc

from llmlab_grpc.proto.llmlab.v1 import replica_pb2
from llmlab_grpc.replication.calls import guarded
from llmlab_grpc.replication.digest import BUCKETS, Digester, Item, decode, encode
from llmlab_grpc.replication.tombstones import Tombstone

if TYPE_CHECKING:
    from llmlab_grpc.replication.replicator import Replicator

log = logging.getLogger(__name__)

DEFAULT_PERIOD_S = 30.0
DIGEST_TIMEOUT_S = 5.0
MAX_DIGEST_ITEMS = 8192
"""Items one ``Digest`` answer carries; more differences wait for the next round."""
MAX_PUSH_PER_PEER = 4096
"""Entries (and as many tombstones) pushed to one peer per round."""
TOMBSTONES_PER_MESSAGE = 1024
EXPIRY_MARGIN_MS = 2000
"""Items this close to expiry are left out: both sides drop them soon anyway, and clocks differ a little."""


class AntiEntropy:
    """The anti-entropy rounds of one node's replicator."""

    def __init__(self, replicator: Replicator, period_s: float = DEFAULT_PERIOD_S) -> None:
        self.replicator = replicator
        self.period_s = period_s
        self._lock = asyncio.Lock()
        self.counters = dict.fromkeys(
            ("rounds", "digest_bytes", "item_bytes", "pushed", "tombstones_pushed", "differing_buckets"), 0)
        self.last_round_s = 0.0
        self._digesters: dict[tuple[str, ...], Digester] = {}

    def _digester(self, members: Iterable[str]) -> Digester:
        """A ``Digester`` for this membership, kept while it lasts: its ranking cache makes the
        next round over the same membership several times cheaper."""
        rep = self.replicator
        key = tuple(sorted({*members, rep.node_id}))
        found = self._digesters.get(key)
        if found is None or found.copies != self._copies():
            if len(self._digesters) >= 4:
                self._digesters.clear()
            found = self._digesters[key] = Digester(rep.node_id, key, self._copies())
        return found

    # -- what this node holds -----------------------------------------------------------
    def _stones(self, now: int) -> list[Item]:
        """Snapshot of the live tombstones (taken on the event loop: the table is not thread-safe)."""
        return [Item(t.key, t.expires_unix_ms, t.deleted_unix_ms, True, primary=t.primary_node_id) for t in
                self.replicator.tombstones.live(now) if t.expires_unix_ms - now > EXPIRY_MARGIN_MS]

    def _items(self, stones: list[Item], now: int) -> list[Item]:
        """Entries and tombstones, one item per key (the newer wins). Thread-safe: reads the manager."""
        items = {s.key: s for s in stones}
        for meta in self.replicator.manager.describe(hottest_first=False):
            if meta.expires_unix_ms - now <= EXPIRY_MARGIN_MS:
                continue
            item = Item(meta.key, meta.expires_unix_ms, meta.created_unix_ms, False, meta.checksum,
                        primary=meta.primary_node_id)
            old = items.get(meta.key)
            if old is None or item.order() > old.order():
                items[meta.key] = item
        return list(items.values())

    def _copies(self) -> int:
        return self.replicator.replica_count + 1

    # -- the initiator --------------------------------------------------------------------
    async def run_round(self, peers: Iterable[str] | None = None) -> int:
        """One round toward ``peers`` (default: every live replica peer); returns entries pushed."""
        rep = self.replicator
        if not rep.replica_count:
            return 0
        async with self._lock:
            started = time.perf_counter()
            live = rep.live_replica_ids()
            targets = [p for p in (live if peers is None else peers) if p in live]
            if not targets:
                return 0
            members = [*live, rep.node_id]
            now = rep.now_ms()
            stones = self._stones(now)
            digester = self._digester(members)

            def hash_all() -> tuple[list[Item], dict[str, list[int]]]:
                items = self._items(stones, now)
                return items, digester.buckets(items, targets)

            log.debug("anti-entropy round toward %s", targets)
            items, buckets = await asyncio.to_thread(hash_all)
            pushed = sum(await asyncio.gather(*(self._with_peer(p, members, items, buckets[p], digester)
                                                for p in targets)))
            self.counters["rounds"] += 1
            log.debug("anti-entropy round done: %d items, pushed %d", len(items), pushed)
            self.last_round_s = time.perf_counter() - started
            return pushed

    async def _with_peer(self, peer: str, members: list[str], items: list[Item], buckets: list[int],
                         digester: Digester) -> int:
        rep = self.replicator
        stub = rep._stub(peer)
        if stub is None:
            return 0
        request = replica_pb2.DigestRequest(sender_node_id=rep.node_id, buckets=encode(buckets), members=members)
        try:
            reply = await guarded(stub.Digest(request, timeout=DIGEST_TIMEOUT_S))
        except grpc.aio.AioRpcError as err:
            log.info("digest with %s failed: %s", peer, err.code())
            return 0
        self.counters["digest_bytes"] += request.ByteSize()
        self.counters["item_bytes"] += reply.ByteSize()
        if not reply.differing:
            return 0
        self.counters["differing_buckets"] += len(reply.differing)
        theirs = {i.key: Item.from_proto(i) for i in reply.items}
        mine = await asyncio.to_thread(digester.shared, items, peer, set(reply.differing))
        entries: list[str] = []
        stones: list[Tombstone] = []
        for item in mine:
            other = theirs.get(item.key)
            if other is not None and other.order() >= item.order():
                continue
            if reply.truncated and other is None:
                continue  # the peer's list was cut: it may well hold this one
            if item.tombstone:
                stone = rep.tombstones.get(item.key, rep.now_ms())
                if stone is not None:
                    stones.append(stone)
            else:
                entries.append(item.key)
        entries, stones = entries[:MAX_PUSH_PER_PEER], stones[:MAX_PUSH_PER_PEER]
        log.log(logging.INFO if entries or stones else logging.DEBUG,
                "anti-entropy with %s: %d buckets differ; pushing %d entries and %d tombstones", peer,
                len(reply.differing), len(entries), len(stones))
        if stones:
            await rep.push_tombstones(peer, stones)
            self.counters["tombstones_pushed"] += len(stones)
        if entries:
            held = await rep.sync_to_node(peer, entries)
            self.counters["pushed"] += len(held)
            return len(held)
        return 0

    # -- the receiver -----------------------------------------------------------------------
    async def answer(self, request: replica_pb2.DigestRequest) -> replica_pb2.DigestResponse:
        """Compare the sender's bucket hashes with ours over the same membership."""
        rep = self.replicator
        theirs = decode(request.buckets)
        if len(theirs) != BUCKETS:
            raise ValueError(f"a digest has {BUCKETS} buckets, not {len(theirs)}")
        sender = request.sender_node_id
        members = {*request.members, sender, rep.node_id}
        now = rep.now_ms()
        stones = self._stones(now)
        digester = self._digester(members)

        def compare() -> tuple[list[int], list[Item]]:
            items = self._items(stones, now)
            ours = digester.buckets(items, [sender])[sender]
            differing = [i for i in range(BUCKETS) if ours[i] != theirs[i]]
            return differing, (digester.shared(items, sender, set(differing)) if differing else [])

        differing, items = await asyncio.to_thread(compare)
        return replica_pb2.DigestResponse(differing=differing, items=[i.to_proto() for i in items[:MAX_DIGEST_ITEMS]],
                                          truncated=len(items) > MAX_DIGEST_ITEMS)
