"""Keeps the peer table true: heartbeats, static seeds, gossip, mDNS candidates, goodbyes.

Only a direct, authenticated heartbeat that succeeds puts a peer in the table (or
keeps it there). Seeds, gossip and mDNS merely propose addresses to try. A peer not
heard from for ``peer_timeout_s`` is dropped; a goodbye (``Leave``) drops it at once.

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
from collections.abc import Callable

import grpc

from llmlab_grpc.mesh.channels import ChannelPool
from llmlab_grpc.mesh.peers import PeerTable
from llmlab_grpc.proto.llmlab.v1 import common_pb2, node_pb2, node_pb2_grpc

log = logging.getLogger(__name__)


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
    ) -> None:
        self._self_info = self_info
        self.table = table
        self._channels = channels
        self._own_address = self_info().address
        self._seeds = [s for s in dict.fromkeys(seeds) if s != self._own_address]
        self._candidates: set[str] = set()
        self._interval = interval_s
        self._timeout = timeout_s
        self._load = load or common_pb2.NodeLoad
        self._cache_stats = cache_stats or (lambda: None)
        self._task: asyncio.Task[None] | None = None
        self._gone: dict[str, float] = {}  # node_id -> monotonic time of its goodbye

    def propose(self, address: str) -> None:
        """Try this address at the next beat (mDNS, gossip)."""
        if address and address != self._own_address and self.table.by_address(address) is None:
            self._candidates.add(address)

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
        known = {r.address for r in self.table.all() if r.address}
        targets = known | set(self._seeds) | self._candidates
        self._candidates.clear()
        await asyncio.gather(*(self._heartbeat(a) for a in targets))
        for record in self.table.expire(self._timeout):
            log.info("peer %s (%s) timed out", record.info.name, record.address or "mobile")
            self._drop_mobiles_of(record.node_id)
            if record.address:
                await self._channels.drop(record.address)

    def _request(self) -> node_pb2.HeartbeatRequest:
        stats = self._cache_stats()
        return node_pb2.HeartbeatRequest(
            sender=self._self_info(),
            sent_unix_ms=int(time.time() * 1000),
            load=self._load(),
            cache_stats=stats,
        )

    async def _heartbeat(self, address: str) -> None:
        stub = node_pb2_grpc.NodeStub(self._channels.get(address))
        try:
            reply = await stub.Heartbeat(self._request(), timeout=min(1.0, self._interval))
        except grpc.aio.AioRpcError as err:
            record = self.table.by_address(address)
            if record is not None:
                record.missed += 1
            if err.code() == grpc.StatusCode.UNAUTHENTICATED:
                log.warning("%s refused our mesh secret; it belongs to another mesh", address)
            return
        receiver = reply.receiver
        if receiver.mesh_id != self._self_info().mesh_id or receiver.address != address:
            # Another mesh, or a stale address now used by someone else.
            if receiver.address and receiver.address != address:
                self.propose(receiver.address)
            return
        if self._recently_gone(receiver.node_id):
            return
        self.table.upsert(receiver, self._source_of(address), load=reply.load)
        mobiles: set[str] = set()
        for info in reply.known_peers:
            if info.kind == common_pb2.NODE_KIND_MOBILE:
                if info.via_node_id == receiver.node_id and info.mesh_id == receiver.mesh_id:
                    self.table.upsert(info, "bridge")
                    mobiles.add(info.node_id)
            elif info.node_id != self._self_info().node_id and info.node_id not in self.table:
                self.propose(info.address)
        self._drop_mobiles_of(receiver.node_id, keep=mobiles)

    def _drop_mobiles_of(self, bridge_id: str, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Forget the mobile nodes a bridge no longer lists (or all of them when it is gone)."""
        for record in self.table.all():
            info = record.info
            if info.kind == common_pb2.NODE_KIND_MOBILE and info.via_node_id == bridge_id \
                    and info.node_id not in keep:
                self.table.remove(info.node_id)

    def _source_of(self, address: str) -> str:
        record = self.table.by_address(address)
        if record is not None:
            return record.source
        return "static" if address in self._seeds else "mdns"

    def _recently_gone(self, node_id: str) -> bool:
        """A peer that said goodbye is not re-added by a heartbeat racing its shutdown."""
        said = self._gone.get(node_id)
        if said is None:
            return False
        if time.monotonic() - said > 2 * self._interval:
            del self._gone[node_id]
            return False
        return True

    def heard_from(self, request: node_pb2.HeartbeatRequest) -> None:
        """A peer heartbeated us: it proved the secret, so it is a peer."""
        sender = request.sender
        if sender.mesh_id != self._self_info().mesh_id:
            return
        self._gone.pop(sender.node_id, None)
        self.table.upsert(
            sender, "heartbeat" if sender.node_id not in self.table else self._source_of(sender.address),
            load=request.load,
            cache_stats=request.cache_stats if request.HasField("cache_stats") else None,
        )

    async def left(self, node_id: str) -> None:
        """A peer said goodbye."""
        self._gone[node_id] = time.monotonic()
        record = self.table.remove(node_id)
        self._drop_mobiles_of(node_id)
        if record is not None:
            log.info("peer %s left", record.info.name)
            if record.address:
                await self._channels.drop(record.address)

    async def stop(self, reason: str) -> None:
        """Stop beating and say goodbye to every peer (bounded to one second)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        me = self._self_info().node_id
        request = node_pb2.LeaveRequest(node_id=me, reason=reason)

        async def goodbye(address: str) -> None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await node_pb2_grpc.NodeStub(self._channels.get(address)).Leave(request, timeout=1.0)

        await asyncio.gather(*(goodbye(r.address) for r in self.table.all() if r.address))
