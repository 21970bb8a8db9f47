"""The ``Node`` service every node serves: identity, peer table, heartbeats, goodbyes."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from llmlab_grpc import ray_runtime
from llmlab_grpc.mesh.membership import Membership
from llmlab_grpc.proto.llmlab.v1 import common_pb2, node_pb2, node_pb2_grpc


class NodeService(node_pb2_grpc.NodeServicer):
    """Answers from the node's own state and its membership."""

    def __init__(
        self,
        info: Callable[[], common_pb2.NodeInfo],
        membership: Membership,
        load: Callable[[], common_pb2.NodeLoad],
        cache_stats: Callable[[], common_pb2.CacheStatistics | None],
        metrics: Callable[[], bytes] = lambda: b"",
    ) -> None:
        self._info = info
        self._membership = membership
        self._load = load
        self._cache_stats = cache_stats
        self._metrics = metrics

    async def GetInfo(
        self, request: node_pb2.GetInfoRequest,
        context: grpc.aio.ServicerContext[node_pb2.GetInfoRequest, node_pb2.GetInfoResponse],
    ) -> node_pb2.GetInfoResponse:
        return node_pb2.GetInfoResponse(info=self._info(), load=self._load(), cache_stats=self._cache_stats(),
                                        now_unix_ms=int(time.time() * 1000), ray=_ray_attachment())

    async def ListPeers(
        self, request: node_pb2.ListPeersRequest,
        context: grpc.aio.ServicerContext[node_pb2.ListPeersRequest, node_pb2.ListPeersResponse],
    ) -> node_pb2.ListPeersResponse:
        return node_pb2.ListPeersResponse(peers=self._membership.table.to_protos(), self=self._info())

    async def Heartbeat(
        self, request: node_pb2.HeartbeatRequest,
        context: grpc.aio.ServicerContext[node_pb2.HeartbeatRequest, node_pb2.HeartbeatResponse],
    ) -> node_pb2.HeartbeatResponse:
        if not request.sender.node_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "heartbeat without sender.node_id")
        self._membership.heard_from(request)
        # Mobile nodes travel only from their own bridge (the one vouching for them), never as hearsay.
        me = self._info().node_id
        known = [r.info for r in self._membership.table.all()
                 if r.info.kind != common_pb2.NODE_KIND_MOBILE or r.info.via_node_id == me]
        return node_pb2.HeartbeatResponse(receiver=self._info(), load=self._load(), known_peers=known,
                                          **self._membership.reply_notes(request.sender))

    async def Leave(
        self, request: node_pb2.LeaveRequest,
        context: grpc.aio.ServicerContext[node_pb2.LeaveRequest, node_pb2.LeaveResponse],
    ) -> node_pb2.LeaveResponse:
        if not request.node_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "leave without node_id")
        await self._membership.left(request.node_id, request.started_unix_ms)
        return node_pb2.LeaveResponse()

    async def GetMetrics(
        self, request: node_pb2.GetMetricsRequest,
        context: grpc.aio.ServicerContext[node_pb2.GetMetricsRequest, node_pb2.GetMetricsResponse],
    ) -> node_pb2.GetMetricsResponse:
        return node_pb2.GetMetricsResponse(text=self._metrics().decode(), node_id=self._info().node_id)


def _ray_attachment() -> node_pb2.RayAttachment | None:
    """Where this process's Ray driver runs, when it runs Ray (read once at start, see ray_runtime)."""
    attached = ray_runtime.attachment()
    if attached is None:
        return None
    return node_pb2.RayAttachment(cluster_address=attached.cluster_address, ray_node_id=attached.ray_node_id,
                                  ray_node_ip=attached.ray_node_ip, on_this_machine=attached.on_this_machine,
                                  own_cluster=attached.own_cluster)
