"""The OpenAI gateway of a node without the planner role, given its ports and fake planner peers.

No node process: a real peer table lists planner peers that are in-process gRPC servers on
loopback (``FakePlanner``), and ``PlannerGateway.events`` reaches them through the peer-call
policy (``mesh/peer_calls.py``): a retryable refusal before the first event fails over, any
other code is the answer, the request's deadline ends the walk, no planner is a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from llmlab_grpc.mesh.channels import ChannelPool
from llmlab_grpc.mesh.known_models import KnownModels
from llmlab_grpc.mesh.peers import PeerTable
from llmlab_grpc.openai_api.errors import ApiError
from llmlab_grpc.openai_api.gateway import PlannerGateway
from llmlab_grpc.planner.mesh_calls import MeshCalls
from llmlab_grpc.ports import LoadMeter, LocalNode
from llmlab_grpc.proto.llmlab.v1 import common_pb2, planner_pb2, planner_pb2_grpc


class FakePlanner(planner_pb2_grpc.PlannerServicer):
    """A planner peer that refuses with ``code``, hangs, or answers with a token and the final task."""

    def __init__(self, code: grpc.StatusCode | None = None, hang: bool = False) -> None:
        self.code = code
        self.hang = hang
        self.asked = 0

    async def AskStream(self, request: planner_pb2.AskStreamRequest, context: grpc.aio.ServicerContext) -> Any:
        self.asked += 1
        if self.code is not None:
            await context.abort(self.code, f"fake {self.code.name}")
        if self.hang:
            await asyncio.Event().wait()
        yield planner_pb2.AskStreamResponse(task_id="t1", token=planner_pb2.TokenDelta(text="Paris"))
        yield planner_pb2.AskStreamResponse(task_id="t1", final=planner_pb2.Task(task_id="t1", answer="Paris"))


@contextlib.asynccontextmanager
async def gateway_with(*planners: FakePlanner) -> AsyncIterator[PlannerGateway]:
    """A bridge-only node's gateway whose peer table lists ``planners`` as p0, p1, ... (by name: that order)."""
    peers = PeerTable("bridge")
    servers = []
    try:
        for i, planner in enumerate(planners):
            server = grpc.aio.server()
            planner_pb2_grpc.add_PlannerServicer_to_server(planner, server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            servers.append(server)
            peers.upsert(common_pb2.NodeInfo(node_id=f"p{i}", name=f"p{i}", address=f"127.0.0.1:{port}",
                                             roles=["planner"]), "static")
        me = LocalNode("bridge", "bridge", ["bridge"], "mesh", 0, address="127.0.0.1:9")
        channels = ChannelPool("unit-test-secret")
        calls = MeshCalls(me, peers, channels, LoadMeter(), KnownModels(None, "mesh"),
                          first_token_timeout_s=20.0, heartbeat_interval_s=1.0)
        yield PlannerGateway(calls, None)
        await channels.close()
    finally:
        for server in servers:
            await server.stop(None)


async def events(gateway: PlannerGateway, timeout_s: float = 10.0) -> list[planner_pb2.AskStreamResponse]:
    return [e async for e in gateway.events(planner_pb2.Query(text="capital of France?"), timeout_s)]


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
async def test_a_planner_that_cannot_take_it_now_is_left_for_the_next(code: grpc.StatusCode) -> None:
    busy, answering = FakePlanner(code), FakePlanner()
    async with gateway_with(busy, answering) as gateway:
        got = await events(gateway)
        assert [e.WhichOneof("event") for e in got] == ["token", "final"] and got[-1].final.answer == "Paris"
        assert (busy.asked, answering.asked) == (1, 1)
        # The one that failed is tried last for a while: the next request goes straight to the other.
        await events(gateway)
        assert (busy.asked, answering.asked) == (1, 2)


async def test_any_other_refusal_is_the_answer_in_openai_terms() -> None:
    refusing, answering = FakePlanner(grpc.StatusCode.INVALID_ARGUMENT), FakePlanner()
    async with gateway_with(refusing, answering) as gateway:
        with pytest.raises(ApiError) as caught:
            await events(gateway)
        assert caught.value.status == 400 and "(planner p0)" in caught.value.message
        assert answering.asked == 0


async def test_every_planner_failing_is_a_503_naming_each() -> None:
    async with gateway_with(FakePlanner(grpc.StatusCode.UNAVAILABLE), FakePlanner(grpc.StatusCode.UNAVAILABLE)) as gw:
        with pytest.raises(ApiError) as caught:
            await events(gw)
        assert caught.value.status == 503
        assert "planner node p0: UNAVAILABLE" in caught.value.message and "planner node p1" in caught.value.message


async def test_the_requests_deadline_ends_the_walk_with_a_504() -> None:
    hanging, answering = FakePlanner(hang=True), FakePlanner()
    async with gateway_with(hanging, answering) as gateway:
        with pytest.raises(ApiError) as caught:
            await events(gateway, timeout_s=0.5)
        assert caught.value.status == 504 and answering.asked == 0


async def test_no_planner_in_the_mesh_is_a_503_that_says_what_to_start() -> None:
    async with gateway_with() as gateway:
        with pytest.raises(ApiError) as caught:
            await events(gateway)
        assert caught.value.status == 503 and caught.value.code == "no_planner_node"
