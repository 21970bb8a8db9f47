"""The peer table: the one place that knows which peers are alive and what they offer.

Discovery sources (zeroconf, static seeds, heartbeats, a bridge's mobile nodes) only
add, refresh and remove rows here; routers read it and never learn where a peer came
from. Listeners hear joins and leaves, which replication uses to repair and sync.
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
    """One known peer."""

    info: common_pb2.NodeInfo
    source: str
    last_seen_mono: float = field(default_factory=time.monotonic)
    last_seen_wall: float = field(default_factory=time.time)
    load: common_pb2.NodeLoad = field(default_factory=common_pb2.NodeLoad)
    cache_stats: common_pb2.CacheStatistics = field(default_factory=common_pb2.CacheStatistics)
    missed: int = 0

    @property
    def node_id(self) -> str:
        return self.info.node_id

    @property
    def address(self) -> str:
        return self.info.address

    def state(self, now: float, interval_s: float) -> int:
        """ALIVE while heartbeats arrive; SUSPECT once one interval and a half has passed."""
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
    ) -> PeerRecord | None:
        """Add or refresh a peer that was just heard from directly. Ignores the node itself."""
        if info.node_id == self._self_id or not info.node_id:
            return None
        record = self._peers.get(info.node_id)
        if record is not None and restarted(record.info, info):
            # Same id, new process: it lost its state, so it left and joined again.
            self.remove(info.node_id)
            record = None
        joined = record is None
        if record is None:
            record = self._peers[info.node_id] = PeerRecord(info=info, source=source)
        else:
            record.info = info
            record.last_seen_mono = time.monotonic()
            record.last_seen_wall = time.time()
            record.missed = 0
        if load is not None:
            record.load = load
        if cache_stats is not None:
            record.cache_stats = cache_stats
        if joined:
            self._notify("joined", record)
        return record

    def touch(self, node_id: str) -> None:
        record = self._peers.get(node_id)
        if record is not None:
            record.last_seen_mono = time.monotonic()
            record.last_seen_wall = time.time()
            record.missed = 0

    def remove(self, node_id: str) -> PeerRecord | None:
        record = self._peers.pop(node_id, None)
        if record is not None:
            self._notify("left", record)
        return record

    def expire(self, timeout_s: float) -> list[PeerRecord]:
        """Drop peers not heard from for ``timeout_s``; returns who was dropped."""
        now = time.monotonic()
        stale = [r for r in self._peers.values() if now - r.last_seen_mono > timeout_s]
        for record in stale:
            self.remove(record.node_id)
        return stale

    def get(self, node_id: str) -> PeerRecord | None:
        return self._peers.get(node_id)

    def by_address(self, address: str) -> PeerRecord | None:
        return next((r for r in self._peers.values() if r.address == address), None)

    def all(self) -> list[PeerRecord]:
        return sorted(self._peers.values(), key=lambda r: r.info.name)

    def with_role(self, role: str) -> list[PeerRecord]:
        return [r for r in self.all() if role in r.info.roles]

    def with_tool(self, tool: str) -> list[PeerRecord]:
        return [r for r in self.all() if tool in r.info.tools]

    def to_protos(self) -> list[common_pb2.Peer]:
        now = time.monotonic()
        return [r.to_proto(now, self._interval_s) for r in self.all()]

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._peers
