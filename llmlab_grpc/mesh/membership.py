"""Keeps the peer table true: heartbeats, static seeds, gossip, mDNS candidates, goodbyes.

Alive means callable. Only a direct, authenticated heartbeat of our own that succeeds
puts a peer in the table as alive (or keeps it so). Seeds, gossip, mDNS and a peer's
inbound heartbeats merely propose addresses to try. A peer not reached and not heard
from for ``peer_timeout_s`` is dropped; a goodbye (``Leave``) drops it at once.

Addresses are not identities (see addresses.py). A peer announces several; we dial
them in our own rank order and keep the first that answers, whatever the peer declares
(so static seeds work too). An address that answers as ourselves is never dialled again.

One-way links: a peer whose heartbeats reach us while our calls to it fail is listed
``one-way`` and never routed to, and our heartbeat replies tell it that we cannot reach
it (with the addresses tried), so it lists us as one-way too.

Duplicate ids: two live processes with one node id. The table keeps the one it has while
that one still answers; a peer that verified the older one is alive after the newer one
appeared tells the newer one in its heartbeat reply (``id_conflict``), and a node that
reaches another process with its own id finds out by itself. The newer one (the
newcomer) exits through ``on_conflict``; nobody's table flaps between the two.

Mobile nodes (browsers paired with a bridge node) have no address to heartbeat. A
bridge lists its own mobile nodes in its heartbeat answers; a successful heartbeat to
the bridge is what vouches for them, so they are added and refreshed from that answer,
removed when the bridge stops listing them, and dropped together with their bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypedDict

import grpc

from llmlab_grpc.mesh.addresses import own_addresses, rank, split
from llmlab_grpc.mesh.channels import ChannelPool
from llmlab_grpc.mesh.peers import PeerRecord, PeerTable
from llmlab_grpc.proto.llmlab.v1 import common_pb2, node_pb2, node_pb2_grpc

log = logging.getLogger(__name__)


@dataclass
class _Conflict:
    """Another process uses a peer's node id: ``kept`` is the one in our table."""

    kept: common_pb2.NodeInfo
    other_address: str
    since_mono: float
    seen_mono: float
    confirmed: bool = False  # the kept one answered us after the other one appeared


@dataclass
class _Outcome:
    address: str
    reply: node_pb2.HeartbeatResponse | None = None
    error: str = ""


def describe_conflict(node_id: str, other: common_pb2.NodeInfo) -> str:
    """The message a refused newcomer exits with."""
    where = other.address or ", ".join(other.addresses) or "an unknown address"
    return (f"node id {node_id!r} is already used by a live node at {where} (name {other.name!r}); "
            "give this node its own --name or --node-id (was a config or LLMLAB_HOME copied?)")


class ReplyNotes(TypedDict, total=False):
    """The ``HeartbeatResponse`` fields that speak about its sender (``Membership.reply_notes``)."""

    sender_unreachable: bool
    sender_addresses_tried: list[str]
    sender_unreachable_error: str
    id_conflict: common_pb2.NodeInfo


class Membership:
    """Runs the heartbeat loop of one node."""

    def __init__(
        self,
        self_info: Callable[[], common_pb2.NodeInfo],
        table: PeerTable,
        channels: ChannelPool,
        seeds: list[str],
        interval_s: float = 1.0,
        timeout_s: float = 3.5,
        load: Callable[[], common_pb2.NodeLoad] | None = None,
        cache_stats: Callable[[], common_pb2.CacheStatistics | None] | None = None,
        on_conflict: Callable[[str], None] | None = None,
        own: Iterable[str] | None = None,
    ) -> None:
        self._self_info = self_info
        self.table = table
        self._channels = channels
        me = self_info()
        self._me = me.node_id
        self._started = me.started_unix_ms
        port = split(me.address)[1]
        self._own: set[str] = {me.address, *me.addresses} | (set(own) if own is not None else own_addresses(port))
        self._seeds = [s for s in dict.fromkeys(seeds) if s not in self._own]
        self._candidates: dict[str, list[str]] = {}  # node id (or "?address") -> addresses to try
        self._inflight: set[str] = set()
        self._interval = interval_s
        self._timeout = timeout_s
        self._load = load or common_pb2.NodeLoad
        self._cache_stats = cache_stats or (lambda: None)
        self._on_conflict = on_conflict
        self._task: asyncio.Task[None] | None = None
        self._kicks: set[asyncio.Task[None]] = set()
        self._gone: dict[str, float] = {}  # node_id -> monotonic time of its goodbye
        self._cannot_call: dict[str, tuple[list[str], str]] = {}  # node_id -> (addresses tried, last error)
        self._conflicts: dict[str, _Conflict] = {}
        self._warned: set[str] = set()
        self.id_conflict = ""  # set when this node found out it is the newcomer of a duplicate id

    # ----- proposals -----
    def propose(self, addresses: str | Iterable[str], node_id: str = "") -> None:
        """Try these addresses of one node (mDNS, gossip, an inbound heartbeat) now, in rank order."""
        addrs = rank([addresses] if isinstance(addresses, str) else addresses, own=self._own)
        if not addrs:
            return
        record = self.table.row(node_id) if node_id else self.table.by_address(addrs[0])
        if record is not None and self._healthy(record):
            return
        key = node_id or f"?{addrs[0]}"
        self._candidates[key] = addrs
        if self._task is not None and key not in self._inflight:
            task = asyncio.ensure_future(self._dial_candidate(key))
            self._kicks.add(task)
            task.add_done_callback(self._kicks.discard)

    async def _dial_candidate(self, key: str) -> None:
        addrs = self._candidates.pop(key, None)
        if addrs:
            await self._reach(key.removeprefix("?") if key.startswith("?") else key, addrs, known=False)

    def _healthy(self, record: PeerRecord) -> bool:
        fresh = time.monotonic() - record.last_seen_mono <= 1.5 * self._interval + 0.5
        return bool(record.address) and record.routable and record.missed == 0 and fresh

    # ----- the loop -----
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="membership")

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.beat()
            except Exception:  # a bug here must not stop liveness for good
                log.exception("heartbeat round failed")
            await asyncio.sleep(max(0.05, self._interval - (time.monotonic() - started)))

    async def beat(self) -> None:
        """One round: heartbeat every peer, seed and candidate; then drop the silent."""
        jobs: dict[str, tuple[list[str], bool]] = {}
        for record in self.table.listing():
            if record.info.kind == common_pb2.NODE_KIND_MOBILE:
                continue
            if self._healthy(record):
                best = self._ranked(record)[:1]
                # A better-ranked address (a shared LAN before a second one) is tried until it is the one in use.
                jobs[record.node_id] = ([*best, record.address] if best != [record.address] else best, True)
            else:  # not reached lately: every address it announced, in our rank order
                addrs = self._ranked(record)
                if addrs:
                    jobs[record.node_id] = (addrs, True)
        in_use = {r.address for r in self.table.listing() if r.address and self._healthy(r)}
        for seed in self._seeds:
            if seed not in in_use:
                jobs.setdefault(f"?{seed}", ([seed], False))
        candidates, self._candidates = self._candidates, {}
        for key, addrs in candidates.items():
            jobs.setdefault(key, (addrs, False))
        # Bounded: one round never waits on a call much past its own deadline, so expiry keeps running.
        limit = min(1.0, self._interval) + 2.5
        await asyncio.gather(*(self._bounded(self._reach(key.removeprefix("?") if key.startswith("?") else key,
                                                         addrs, known), limit)
                               for key, (addrs, known) in jobs.items() if key not in self._inflight))
        now = time.monotonic()
        for node_id in [k for k, c in self._conflicts.items() if now - c.seen_mono > 2 * self._timeout]:
            del self._conflicts[node_id]
        for record in self.table.expire(self._timeout):
            log.info("peer %s (%s) timed out", record.info.name, record.address or "no address")
            self._cannot_call.pop(record.node_id, None)
            self._drop_mobiles_of(record.node_id)
            if record.address:
                await self._channels.drop(record.address)

    @staticmethod
    async def _bounded(work: Coroutine[Any, Any, None], limit_s: float) -> None:
        try:
            await asyncio.wait_for(work, limit_s)
        except TimeoutError:
            log.warning("a heartbeat took over %.1f s; going on without it", limit_s)

    def _ranked(self, record: PeerRecord) -> list[str]:
        """The record's addresses in our dial order (ties: the order the peer declared them)."""
        return rank([*record.info.addresses, record.address], own=self._own)

    def _request(self) -> node_pb2.HeartbeatRequest:
        stats = self._cache_stats()
        return node_pb2.HeartbeatRequest(
            sender=self._self_info(),
            sent_unix_ms=int(time.time() * 1000),
            load=self._load(),
            cache_stats=stats,
        )

    async def _call(self, address: str) -> _Outcome:
        stub = node_pb2_grpc.NodeStub(self._channels.get(address))
        try:
            reply = await stub.Heartbeat(self._request(), timeout=min(1.0, self._interval))
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAUTHENTICATED and address not in self._warned:
                self._warned.add(address)
                log.warning("%s refused our mesh secret; it belongs to another mesh", address)
            return _Outcome(address, error=err.code().name)
        return _Outcome(address, reply=reply)

    async def _reach(self, key: str, addrs: list[str], known: bool) -> None:
        """Heartbeat one node (``key``: its node id, or an address when unknown) at ``addrs``,
        all at once; the best-ranked address that answers as that node is kept."""
        self._inflight.add(key)
        try:
            outcomes = await asyncio.gather(*(self._call(a) for a in addrs))
        finally:
            self._inflight.discard(key)
        reached: set[str] = set()
        for out in outcomes:  # in rank order
            if out.reply is not None and self._accept(out.address, out.reply, reached):
                reached.add(out.reply.receiver.node_id)
        record = self.table.row(key)
        if record is not None and key not in reached and known:
            self._failed(record, addrs, next((o.error for o in outcomes if o.error), "wrong node answered"))
        in_use = {r.address for r in self.table.listing()}
        for out in outcomes:
            if out.reply is None and out.address not in in_use and out.address not in self._seeds:
                await self._channels.drop(out.address)

    def _accept(self, address: str, reply: node_pb2.HeartbeatResponse, reached: set[str]) -> bool:
        """Take one successful heartbeat into the table; False when it does not count."""
        receiver = reply.receiver
        if receiver.mesh_id != self._self_info().mesh_id or not receiver.node_id:
            return False
        if receiver.node_id in reached:
            return False  # a better-ranked address of the same node already answered
        if receiver.node_id == self._me:
            if receiver.started_unix_ms == self._started or not receiver.started_unix_ms:
                self._own.add(address)  # an address of ours (a shared 172.17.0.1, a second name)
            else:
                self._same_id_answered(address, receiver)
            return False
        if self._recently_gone(receiver.node_id):
            return False
        record = self.table.row(receiver.node_id)
        if record is not None and record.info.started_unix_ms and receiver.started_unix_ms \
                and record.info.started_unix_ms != receiver.started_unix_ms:
            if self._conflicting(record, address, receiver):
                return False
        elif record is not None and self._healthy(record) and record.address != address:
            order = rank([*receiver.addresses, record.address, address])
            if address not in order or record.address in order[:order.index(address)]:
                return False  # it answers where we already reach it, no worse: keep that address
        conflict = self._conflicts.get(receiver.node_id)
        if conflict is not None and conflict.kept.started_unix_ms == receiver.started_unix_ms \
                and not conflict.confirmed and time.monotonic() > conflict.since_mono:
            conflict.confirmed = True
            log.warning("two live nodes use the node id %r: %s (kept) and %s (newer, refused)",
                        receiver.node_id, address, conflict.other_address)
        source = record.source if record is not None else ("static" if address in self._seeds else "mdns")
        self.table.upsert(receiver, source, load=reply.load, address=address)
        self._cannot_call.pop(receiver.node_id, None)
        if reply.sender_unreachable:
            tried = ", ".join(reply.sender_addresses_tried) or "no address"
            self.table.mark_one_way(receiver.node_id, f"it cannot reach us (tried {tried}: "
                                                      f"{reply.sender_unreachable_error or 'no answer'})")
        if reply.HasField("id_conflict") and reply.id_conflict.node_id == self._me:
            self._same_id_answered(reply.id_conflict.address, reply.id_conflict)
        mobiles: set[str] = set()
        for info in reply.known_peers:
            if info.kind == common_pb2.NODE_KIND_MOBILE:
                if info.via_node_id == receiver.node_id and info.mesh_id == receiver.mesh_id:
                    self.table.upsert(info, "bridge")
                    mobiles.add(info.node_id)
            elif info.node_id == self._me and info.started_unix_ms != self._started and info.started_unix_ms:
                self.propose([info.address, *info.addresses], "")  # someone else with our id: look at it
            elif info.node_id != self._me and self.table.row(info.node_id) is None:
                self.propose([info.address, *info.addresses], info.node_id)
        self._drop_mobiles_of(receiver.node_id, keep=mobiles)
        return True

    def _conflicting(self, record: PeerRecord, address: str, receiver: common_pb2.NodeInfo) -> bool:
        """``receiver`` has the id of ``record`` but is another process: a restart, or a duplicate."""
        if record.address == address or not self._healthy(record):
            return False  # same place, or the old one stopped answering: it restarted
        conflict = self._conflicts.get(receiver.node_id)
        now = time.monotonic()
        if conflict is None or conflict.kept.started_unix_ms != record.info.started_unix_ms:
            conflict = self._conflicts[receiver.node_id] = _Conflict(record.info, address, now, now)
        conflict.seen_mono = now
        return True

    def _same_id_answered(self, address: str, other: common_pb2.NodeInfo) -> None:
        """Another live process uses our node id; if we are the newer one, we must go."""
        older = (other.started_unix_ms, other.address) < (self._started, self._self_info().address)
        if older and not self.id_conflict:
            self.id_conflict = describe_conflict(self._me, other if other.address else _at(other, address))
            log.error("%s", self.id_conflict)
            if self._on_conflict is not None:
                self._on_conflict(self.id_conflict)
        elif not older and other.address not in self._warned:
            self._warned.add(other.address)
            log.warning("a newer node at %s uses our node id %r; it will be refused", address, self._me)

    def _failed(self, record: PeerRecord, addrs: list[str], error: str) -> None:
        """None of the record's addresses answered this round. Its heartbeats still arriving after our
        calls began to fail make the link one-way (a dead peer's stop: it just times out)."""
        now = time.monotonic()
        if record.missed == 0 or record.failing_since_mono <= 0:
            record.failing_since_mono = now
        record.missed += 1
        heard_since = record.last_heard_mono > record.failing_since_mono
        if not heard_since or now - record.last_heard_mono > 1.5 * self._interval + 0.5:
            return
        never_reached = record.last_seen_mono <= 0
        self._cannot_call[record.node_id] = (addrs, error)
        if never_reached or record.missed >= 2:
            self.table.mark_one_way(
                record.node_id, f"its heartbeats reach us; our calls to {', '.join(addrs)} fail ({error})")

    def _drop_mobiles_of(self, bridge_id: str, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Forget the mobile nodes a bridge no longer lists (or all of them when it is gone)."""
        for record in self.table.listing():
            info = record.info
            if info.kind == common_pb2.NODE_KIND_MOBILE and info.via_node_id == bridge_id \
                    and info.node_id not in keep:
                self.table.remove(info.node_id)

    def _recently_gone(self, node_id: str) -> bool:
        """A peer that said goodbye is not re-added by a heartbeat racing its shutdown."""
        said = self._gone.get(node_id)
        if said is None:
            return False
        if time.monotonic() - said > 2 * self._interval:
            del self._gone[node_id]
            return False
        return True

    # ----- the Node service's side -----
    def heard_from(self, request: node_pb2.HeartbeatRequest) -> None:
        """A peer heartbeated us: it proved the secret, so it exists. Callable is for our own calls to say."""
        sender = request.sender
        if sender.mesh_id != self._self_info().mesh_id:
            return
        if sender.node_id == self._me:
            if sender.started_unix_ms and sender.started_unix_ms != self._started:
                self._same_id_answered(sender.address, sender)
            return
        record = self.table.row(sender.node_id)
        if record is not None and record.info.started_unix_ms and sender.started_unix_ms \
                and record.info.started_unix_ms != sender.started_unix_ms and self._healthy(record):
            # Another process with the id of a peer we reach: propose its addresses so the next
            # round sees both (a restart replaces the old row; a duplicate is recorded).
            self.propose([sender.address, *sender.addresses])
            return
        self._gone.pop(sender.node_id, None)
        record = self.table.heard(sender)
        if record is None:
            return
        if record.routable and record.last_seen_mono > 0:
            record.load = request.load
            if request.HasField("cache_stats"):
                record.cache_stats = request.cache_stats
        if not self._healthy(record):
            self.propose([sender.address, *sender.addresses], sender.node_id)

    def reply_notes(self, sender: common_pb2.NodeInfo) -> ReplyNotes:
        """Extra HeartbeatResponse fields for ``sender``: we cannot reach it; its id is taken."""
        notes: ReplyNotes = {}
        failed = self._cannot_call.get(sender.node_id)
        if failed is not None:
            notes["sender_unreachable"] = True
            notes["sender_addresses_tried"], notes["sender_unreachable_error"] = failed
        conflict = self._conflicts.get(sender.node_id)
        if conflict is not None and conflict.confirmed and sender.started_unix_ms \
                and conflict.kept.started_unix_ms < sender.started_unix_ms:
            notes["id_conflict"] = conflict.kept
        if sender.node_id == self._me and sender.started_unix_ms > self._started:
            notes["id_conflict"] = self._self_info()
        return notes

    def conflicts(self) -> dict[str, common_pb2.NodeInfo]:
        """node id -> the process kept, for ids that two live processes use (doctor)."""
        return {k: c.kept for k, c in self._conflicts.items() if c.confirmed}

    async def left(self, node_id: str, started_unix_ms: int = 0) -> None:
        """A peer said goodbye (ignored when it comes from another process than the one we know)."""
        record = self.table.row(node_id)
        if record is not None and started_unix_ms and record.info.started_unix_ms \
                and record.info.started_unix_ms != started_unix_ms:
            return
        self._gone[node_id] = time.monotonic()
        record = self.table.remove(node_id)
        self._cannot_call.pop(node_id, None)
        self._drop_mobiles_of(node_id)
        if record is not None:
            log.info("peer %s left", record.info.name)
            if record.address:
                await self._channels.drop(record.address)

    async def lost_announcement(self, node_id: str, addresses: Iterable[str]) -> None:
        """mDNS said goodbye for ``node_id`` at ``addresses``: drop it only if that is where we reach it."""
        record = self.table.row(node_id)
        if record is not None and (not record.address or record.address in set(addresses)):
            await self.left(node_id)

    async def stop(self, reason: str, goodbye: bool = True) -> None:
        """Stop beating and say goodbye to every peer (bounded to one second)."""
        for task in [self._task, *self._kicks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not goodbye:
            return
        request = node_pb2.LeaveRequest(node_id=self._me, reason=reason, started_unix_ms=self._started)

        async def say(address: str) -> None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await node_pb2_grpc.NodeStub(self._channels.get(address)).Leave(request, timeout=1.0)

        await asyncio.gather(*(say(r.address) for r in self.table.listing() if r.address))


def _at(info: common_pb2.NodeInfo, address: str) -> common_pb2.NodeInfo:
    copy = common_pb2.NodeInfo()
    copy.CopyFrom(info)
    copy.address = address
    return copy
