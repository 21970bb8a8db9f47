"""The peer table: the one place that knows which peers are alive and what they offer.

Discovery sources (zeroconf, static seeds, heartbeats, a bridge's mobile nodes) only
add, refresh and remove rows here; routers read it and never learn where a peer came
from. Listeners hear joins and leaves, which replication uses to repair and sync.

Alive means callable: a row is refreshed (``upsert``) only when this node's own call
reached the peer. A peer whose heartbeats reach us but whom our calls do not reach, or
who tells us it cannot reach us, is ``one-way``: it stays listed (``listing``, ListPeers)
so people can see the broken link, but ``all``/``with_role``/``with_tool`` (what routers
and replication read) leave it out, and listeners hear it leave until the link works.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from llmlab_grpc.proto.llmlab.v1 import common_pb2

PeerListener = Callable[[str, "PeerRecord"], None]
"""Called with ("joined" | "left", record)."""


@dataclass
class PeerRecord:
    """One known peer. ``info.address`` is the address this node reaches it at ("" when none does)."""

    info: common_pb2.NodeInfo
    source: str
    last_seen_mono: float = field(default_factory=time.monotonic)  # our last call that reached it
    last_seen_wall: float = field(default_factory=time.time)
    load: common_pb2.NodeLoad = field(default_factory=common_pb2.NodeLoad)
    cache_stats: common_pb2.CacheStatistics = field(default_factory=common_pb2.CacheStatistics)
    missed: int = 0
    last_heard_mono: float = 0.0  # its last heartbeat that reached us
    failing_since_mono: float = 0.0  # when our calls began to fail (with missed > 0)
    one_way: str = ""  # why the link works one way only; "" when it works both ways

    @property
    def node_id(self) -> str:
        return self.info.node_id

    @property
    def address(self) -> str:
        return self.info.address

    @property
    def routable(self) -> bool:
        return not self.one_way

    def state(self, now: float, interval_s: float) -> common_pb2.PeerState:
        """ONE_WAY when flagged; else ALIVE while our calls reach it, SUSPECT after one interval and a half."""
        if self.one_way:
            return common_pb2.PEER_STATE_ONE_WAY
        if now - self.last_seen_mono > 1.5 * interval_s + 0.5:
            return common_pb2.PEER_STATE_SUSPECT
        return common_pb2.PEER_STATE_ALIVE

    def to_proto(self, now: float, interval_s: float) -> common_pb2.Peer:
        seen = Timestamp()
        seen.FromNanoseconds(int(self.last_seen_wall * 1e9))
        return common_pb2.Peer(
            info=self.info,
            state=self.state(now, interval_s),
            last_seen=seen,
            source=self.source,
            load=self.load,
            cache_stats=self.cache_stats,
            detail=self.one_way,
        )


def restarted(old: common_pb2.NodeInfo, new: common_pb2.NodeInfo) -> bool:
    """Whether ``new`` describes a later process than ``old`` (both must carry a start time)."""
    return bool(old.started_unix_ms and new.started_unix_ms and old.started_unix_ms != new.started_unix_ms)


class PeerTable:
    """node_id → PeerRecord, with join/leave notifications."""

    def __init__(self, self_id: str, interval_s: float = 1.0) -> None:
        self._self_id = self_id
        self._interval_s = interval_s
        self._peers: dict[str, PeerRecord] = {}
        self._listeners: list[PeerListener] = []

    def subscribe(self, listener: PeerListener) -> None:
        self._listeners.append(listener)

    def _notify(self, event: str, record: PeerRecord) -> None:
        for listener in list(self._listeners):
            listener(event, record)

    def upsert(
        self,
        info: common_pb2.NodeInfo,
        source: str,
        load: common_pb2.NodeLoad | None = None,
        cache_stats: common_pb2.CacheStatistics | None = None,
        address: str | None = None,
    ) -> PeerRecord | None:
        """Add or refresh a peer that our own call just reached (at ``address``, default
        ``info.address``). Ignores the node itself. A one-way peer becomes routable again."""
        if info.node_id == self._self_id or not info.node_id:
            return None
        if address is not None and address != info.address:
            info = _with_address(info, address)
        record = self._peers.get(info.node_id)
        if record is not None and restarted(record.info, info):
            # Same id, new process: it lost its state, so it left and joined again.
            self.remove(info.node_id)
            record = None
        joined = record is None
        if record is None:
            record = self._peers[info.node_id] = PeerRecord(info=info, source=source)
        else:
            joined = bool(record.one_way) or record.last_seen_mono <= 0  # was one-way, or only heard from
            record.info = info
            record.last_seen_mono = time.monotonic()
            record.last_seen_wall = time.time()
            record.missed = 0
            record.one_way = ""
        if load is not None:
            record.load = load
        if cache_stats is not None:
            record.cache_stats = cache_stats
        if joined:
            self._notify("joined", record)
        return record

    def heard(self, info: common_pb2.NodeInfo, source: str = "heartbeat") -> PeerRecord | None:
        """The peer's heartbeat reached us. That proves it exists, not that we can call it: a new
        peer is added as not yet callable (no address in use, one-way once a call of ours failed)."""
        if info.node_id == self._self_id or not info.node_id:
            return None
        record = self._peers.get(info.node_id)
        if record is None or (restarted(record.info, info) and not record.routable):
            record = self._peers[info.node_id] = PeerRecord(
                info=_with_address(info, ""), source=source, last_seen_mono=0.0, last_seen_wall=time.time())
        record.last_heard_mono = time.monotonic()
        return record

    def mark_one_way(self, node_id: str, why: str) -> None:
        """Keep listing the peer but route nothing to it (listeners hear it leave)."""
        record = self._peers.get(node_id)
        if record is None:
            return
        was_routable = record.routable and record.last_seen_mono > 0
        record.one_way = why
        if was_routable:
            self._notify("left", record)

    def remove(self, node_id: str) -> PeerRecord | None:
        record = self._peers.pop(node_id, None)
        if record is not None and record.routable and record.last_seen_mono > 0:
            self._notify("left", record)
        return record

    def expire(self, timeout_s: float) -> list[PeerRecord]:
        """Drop peers neither reached by our calls nor heard from for ``timeout_s``."""
        now = time.monotonic()
        stale = [r for r in self._peers.values()
                 if now - max(r.last_seen_mono, r.last_heard_mono) > timeout_s]
        for record in stale:
            self.remove(record.node_id)
        return stale

    def get(self, node_id: str) -> PeerRecord | None:
        """The peer, when it may be called (one-way and not yet reached ones are None, as in ``all``)."""
        record = self._peers.get(node_id)
        return record if record is not None and record.routable and (record.address or record.last_seen_mono > 0) \
            else None

    def row(self, node_id: str) -> PeerRecord | None:
        """Any row, one-way and not yet reached ones included (membership's view)."""
        return self._peers.get(node_id)

    def by_address(self, address: str) -> PeerRecord | None:
        return next((r for r in self._peers.values() if r.address == address), None)

    def listing(self) -> list[PeerRecord]:
        """Every row, one-way ones included (what ListPeers shows)."""
        return sorted(self._peers.values(), key=lambda r: r.info.name)

    def all(self) -> list[PeerRecord]:
        """The peers that may be called: one-way ones left out."""
        return [r for r in self.listing() if r.routable and (r.address or r.last_seen_mono > 0)]

    def with_role(self, role: str) -> list[PeerRecord]:
        return [r for r in self.all() if role in r.info.roles]

    def with_tool(self, tool: str) -> list[PeerRecord]:
        return [r for r in self.all() if tool in r.info.tools]

    def to_protos(self) -> list[common_pb2.Peer]:
        now = time.monotonic()
        return [r.to_proto(now, self._interval_s) for r in self.listing()
                if r.last_seen_mono > 0 or r.one_way]

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, node_id: object) -> bool:
        """Whether the peer may be called (see ``get``)."""
        return isinstance(node_id, str) and self.get(node_id) is not None


def _with_address(info: common_pb2.NodeInfo, address: str) -> common_pb2.NodeInfo:
    copy = common_pb2.NodeInfo()
    copy.CopyFrom(info)
    copy.address = address
    return copy
