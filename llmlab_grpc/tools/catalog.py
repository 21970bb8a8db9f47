"""What tools the whole mesh has: this node's registry plus each live peer's own listing.

Heartbeats already tell every node which tool *names* each peer has; descriptions,
schemas, timeouts and usage counters come from asking the peer
(``ListTools(local_only=True)``, all peers at once, each bounded by
``PEER_LIST_TIMEOUT_S``). The last answer of each peer is kept: the router reads tool
timeouts from it, and a peer that does not answer is listed from it for
``CACHE_TTL_S`` (then by tool names only).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from llmlab_grpc.mesh.peers import PeerRecord
from llmlab_grpc.proto.llmlab.v1 import common_pb2, tool_executor_pb2, tool_executor_pb2_grpc
from llmlab_grpc.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from llmlab_grpc.ports import Channels, LocalNode, MobileTools, PeersView, Slot

log = logging.getLogger(__name__)

CACHE_TTL_S = 30.0
"""How long a peer's last listing stands in for it when it does not answer."""
PEER_LIST_TIMEOUT_S = 2.0
"""Deadline of the ListTools call to one peer; a slow peer is listed by tool names only."""


@dataclass
class _Cached:
    tools: tuple[str, ...]
    specs: list[common_pb2.ToolSpec]
    at: float


def _is_mobile(record: PeerRecord) -> bool:
    return record.info.kind == common_pb2.NODE_KIND_MOBILE


class ToolCatalog:
    """Specs of every tool in the mesh, with the live nodes that have each."""

    def __init__(self, me: LocalNode, peers: PeersView, channels: Channels, registry: ToolRegistry,
                 mobile: Slot[MobileTools]) -> None:
        self.me = me
        self.peers = peers
        self.channels = channels
        self.registry = registry
        self.mobile = mobile
        """The bridge role of this node, when it has one: its paired phones' tools are listed as its own."""
        self._cache: dict[str, _Cached] = {}

    def own_specs(self, capability: str = "") -> list[common_pb2.ToolSpec]:
        """This node's tools plus those of mobile nodes bridged here: what it answers without asking peers."""
        specs = self.registry.specs(capability, self.me.node_id, self.me.name)
        mobile = self.mobile.get()
        if mobile is not None:
            try:
                for spec in mobile.mobile_tool_specs():
                    if not capability or capability in spec.capabilities:
                        specs.append(spec)
            except Exception:
                log.exception("listing the bridge's mobile tools failed")
        return _merge(specs)

    async def mesh_specs(self, capability: str = "") -> list[common_pb2.ToolSpec]:
        """Every tool of this node and its live peers, merged by name, sorted."""
        specs = self.own_specs(capability)
        peers = [r for r in self.peers.all() if r.info.tools or "bridge" in r.info.roles]
        grpc_peers = [r for r in peers if not _is_mobile(r) and r.address]  # a bridge lists its phones' tools
        replies = await asyncio.gather(*(self._peer_specs(r) for r in grpc_peers))
        described = {s.name for s in specs}
        for reply in replies:
            described.update(s.name for s in reply)
        for record, reply in zip(grpc_peers, replies, strict=True):
            specs.extend(s for s in reply if not capability or capability in s.capabilities)
            if not reply:  # the peer did not answer: list it by the names it announces
                specs.extend(_bare(name, record) for name in record.info.tools if not capability)
        listed = {node_id for s in specs for node_id in s.node_ids}
        for record in peers:
            if _is_mobile(record) and record.node_id not in listed and not capability:
                specs.extend(_bare(name, record) for name in record.info.tools)
        return self._routable(_merge(specs))

    def _routable(self, specs: list[common_pb2.ToolSpec]) -> list[common_pb2.ToolSpec]:
        """Keep only nodes this node can route to now (itself and its peer table), so what is listed runs.

        A bridge lists a phone the moment it pairs; the other nodes learn the phone from the
        bridge's next heartbeat. Until then the phone is left out rather than listed unreachable.
        """
        me = self.me.node_id
        kept = []
        for spec in specs:
            pairs = [(i, n) for i, n in zip(spec.node_ids, spec.node_names, strict=False)
                     if i == me or i in self.peers]
            if not pairs:
                continue
            ids = {i for i, _ in pairs}
            usage = [u for u in spec.usage if u.node_id in ids]
            del spec.node_ids[:], spec.node_names[:], spec.usage[:]
            spec.node_ids.extend(i for i, _ in pairs)
            spec.node_names.extend(n for _, n in pairs)
            spec.usage.extend(usage)
            kept.append(spec)
        return kept

    async def _peer_specs(self, record: PeerRecord) -> list[common_pb2.ToolSpec]:
        """The peer's own listing, asked now; its last answer (if recent) when it does not answer."""
        stub = tool_executor_pb2_grpc.ToolExecutorStub(self.channels.get(record.address))
        try:
            reply = await stub.ListTools(tool_executor_pb2.ListToolsRequest(local_only=True),
                                         timeout=PEER_LIST_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            log.info("ListTools on %s failed: %s", record.info.name, err.code().name)
            cached = self._cache.get(record.node_id)
            fresh = cached is not None and cached.tools == tuple(record.info.tools) \
                and time.monotonic() - cached.at < CACHE_TTL_S
            return cached.specs if fresh and cached is not None else []
        specs = list(reply.tools)
        self._cache[record.node_id] = _Cached(tuple(record.info.tools), specs, time.monotonic())
        return specs

    def timeout_s(self, tool: str) -> float | None:
        """The tool's own per-call timeout, when any node has told us; None when unknown."""
        local = self.registry.get(tool)
        if local is not None:
            return float(local.timeout_s)
        known = [s.timeout_ms for c in self._cache.values() for s in c.specs if s.name == tool and s.timeout_ms > 0]
        return max(known) / 1000 if known else None

    def forget(self, node_id: str) -> None:
        self._cache.pop(node_id, None)


def _bare(name: str, record: PeerRecord) -> common_pb2.ToolSpec:
    """A tool known only by name (its node did not describe it)."""
    return common_pb2.ToolSpec(name=name, node_ids=[record.node_id], node_names=[record.info.name])


def _merge(specs: list[common_pb2.ToolSpec]) -> list[common_pb2.ToolSpec]:
    """One spec per name: the first full description wins, node ids and usage are united."""
    merged: dict[str, common_pb2.ToolSpec] = {}
    for spec in specs:
        into = merged.get(spec.name)
        if into is None:
            into = merged[spec.name] = common_pb2.ToolSpec()
            into.CopyFrom(spec)
            del into.node_ids[:], into.node_names[:], into.usage[:]
        elif not into.description and spec.description:
            ids, names, usage = list(into.node_ids), list(into.node_names), list(into.usage)
            into.CopyFrom(spec)
            del into.node_ids[:], into.node_names[:], into.usage[:]
            into.node_ids.extend(ids)
            into.node_names.extend(names)
            into.usage.extend(usage)
        for index, node_id in enumerate(spec.node_ids):
            if node_id not in into.node_ids:
                into.node_ids.append(node_id)
                into.node_names.append(spec.node_names[index] if index < len(spec.node_names) else node_id)
        seen = {u.node_id for u in into.usage}
        into.usage.extend(u for u in spec.usage if u.node_id not in seen)
    return [merged[name] for name in sorted(merged)]
