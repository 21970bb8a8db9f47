"""ToolRouter and the ToolExecutor service on in-process nodes: routing, failover, targets, mobile nodes."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from llmlab_grpc.config import NodeSettings
from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.node import LlmlabNode
from llmlab_grpc.proto.llmlab.v1 import common_pb2, tool_executor_pb2, tool_executor_pb2_grpc
from llmlab_grpc.roles import RoleComponent
from llmlab_grpc.tools.base import InvalidArguments, ToolFailure, ToolOutcome
from llmlab_grpc.tools.component import ToolsComponent
from llmlab_grpc.tools.convert import from_struct, to_struct
from llmlab_grpc.tools.registry import ToolNotFound
from tests.tool_plugins import AttachmentTool, EchoTool, NapTool, SleepyTool

SECRET = secrets.token_urlsafe(16)


async def eventually(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def running(name: str, *seeds: str, **overrides: Any) -> AsyncIterator[LlmlabNode]:
    settings = NodeSettings(name=name, roles=["tools"], host="127.0.0.1", port=0, mesh_secret=SECRET, mdns=False,
                            peers=list(seeds), builtin_tools=["none"], drain_s=0, peer_timeout_s=60.0,
                            heartbeat_interval_s=0.2, **overrides)
    node = LlmlabNode(settings)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


def tools_of(node: LlmlabNode) -> ToolsComponent:
    component = node.components["tools"]
    assert isinstance(component, ToolsComponent)
    return component


def sees(node: LlmlabNode, peer: LlmlabNode, tool: str) -> bool:
    record = node.peers.get(peer.node_id)
    return record is not None and tool in record.info.tools


async def call(node: LlmlabNode, method: str, request: Any, timeout: float = 10.0) -> Any:
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = tool_executor_pb2_grpc.ToolExecutorStub(channel)
        return await getattr(stub, method)(request, metadata=bearer(SECRET), timeout=timeout)


async def test_routes_to_the_only_node_with_the_tool_and_counts_load() -> None:
    async with running("r-a") as a, running("r-b", a.address) as b:
        await tools_of(b).registry.add(EchoTool())
        await eventually(lambda: sees(a, b, "echo"), what="a to hear that b has echo")
        response = await tools_of(a).router.execute("echo", {"text": "hi"}, task_id="t1")
        assert (response.node_id, response.node_name) == ("r-b", "r-b")
        assert from_struct(response.result) == {"text": "hi"} and not response.HasField("error")
        assert list(response.failed_over) == [] and response.duration_ms > 0
        assert tools_of(b).registry.stats("echo").calls == 1
        # tools_running is raised while a tool runs here and lowered after.
        await tools_of(a).registry.add(NapTool())
        task = asyncio.create_task(tools_of(a).router.execute("nap", {"seconds": 0.3}))
        await eventually(lambda: a.load.tools_running == 1, what="tools_running to rise")
        assert not (await task).HasField("error")
        assert a.load.tools_running == 0


async def test_runtime_registration_is_listed_by_other_nodes() -> None:
    async with running("l-a") as a, running("l-b", a.address) as b:
        assert "echo" not in a.tools
        await tools_of(b).registry.add(EchoTool())
        assert b.tools == ["echo"]

        async def listed() -> dict[str, Any]:
            reply = await call(a, "ListTools", tool_executor_pb2.ListToolsRequest())
            return {t.name: t for t in reply.tools}

        deadline = time.monotonic() + 15
        while "echo" not in (specs := await listed()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        echo = specs["echo"]
        assert (list(echo.node_ids), list(echo.node_names)) == (["l-b"], ["l-b"])
        assert echo.description == "Echo the text back." and from_struct(echo.input_schema)["required"] == ["text"]
        assert echo.timeout_ms == 5000 and [u.node_id for u in echo.usage] == ["l-b"]
        local = await call(a, "ListTools", tool_executor_pb2.ListToolsRequest(local_only=True))
        assert list(local.tools) == []
        assert [t.name for t in (await call(a, "ListTools", tool_executor_pb2.ListToolsRequest(
            capability="text"))).tools] == ["echo"]
        assert list((await call(a, "ListTools", tool_executor_pb2.ListToolsRequest(capability="math"))).tools) == []

        await tools_of(b).registry.remove("echo")
        deadline = time.monotonic() + 15
        while "echo" in await listed() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert "echo" not in await listed()


async def test_service_status_codes() -> None:
    async with running("s-a") as a:
        await tools_of(a).registry.add(EchoTool())
        for request, code, fragment in [
            (tool_executor_pb2.ExecuteRequest(tool="nope"), grpc.StatusCode.NOT_FOUND, "tools in the mesh: echo"),
            (tool_executor_pb2.ExecuteRequest(tool=""), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
            (tool_executor_pb2.ExecuteRequest(tool="echo", arguments=to_struct({"text": 5})),
             grpc.StatusCode.INVALID_ARGUMENT, "text: Input should be a valid string"),
            (tool_executor_pb2.ExecuteRequest(tool="echo", arguments=to_struct({"text": "x" * 101})),
             grpc.StatusCode.INVALID_ARGUMENT, "at most 100 characters"),
            (tool_executor_pb2.ExecuteRequest(tool="echo", target_node_id="ghost"), grpc.StatusCode.NOT_FOUND,
             "no live node 'ghost'"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(a, "Execute", request)
            assert caught.value.code() == code, caught.value.details()
            assert fragment in (caught.value.details() or "")
        ok = await call(a, "Execute", tool_executor_pb2.ExecuteRequest(
            tool="echo", arguments=to_struct({"text": "x"}), target_node_id="s-a"))
        assert ok.node_id == "s-a"


async def test_failures_and_timeouts_are_error_results() -> None:
    async with running("e-a") as a:
        for tool in (NapTool(), AttachmentTool()):
            await tools_of(a).registry.add(tool)
        timed_out = await call(a, "Execute", tool_executor_pb2.ExecuteRequest(
            tool="nap", arguments=to_struct({"seconds": 3})))
        assert timed_out.error.code == "TIMEOUT" and timed_out.node_id == "e-a"
        attached = await call(a, "Execute", tool_executor_pb2.ExecuteRequest(
            tool="attach", arguments=to_struct({"text": "note"})))
        assert [(x.name, x.mime_type, x.data) for x in attached.attachments] == [("note.txt", "text/plain", b"note")]


async def test_fails_over_on_deadline_and_targets_a_node() -> None:
    async with running("d-a") as a, running("d-b", a.address) as b, running("d-c", a.address) as c:
        await tools_of(b).registry.add(SleepyTool(delay_s=20))
        await tools_of(c).registry.add(SleepyTool(delay_s=0))
        await eventually(lambda: sees(a, b, "sleepy") and sees(a, c, "sleepy"), what="both sleepy nodes")
        router = tools_of(a).router
        assert [r.node_id for r in router.candidates("sleepy")] == ["d-b", "d-c"]
        response = await router.execute("sleepy", {"text": "x"}, timeout_s=0.5)
        assert response.node_id == "d-c" and list(response.failed_over) == ["d-b"]
        targeted = await router.execute("sleepy", {"text": "y"}, target_node_id="d-c")
        assert targeted.node_id == "d-c" and from_struct(targeted.result) == {"text": "y"}
        with pytest.raises(ToolNotFound, match="has no tool 'echo'"):
            await router.execute("echo", {"text": "x"}, target_node_id="d-c")
        # A forwarded (local_only) call that names another node is refused so the caller fails over.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(c, "Execute", tool_executor_pb2.ExecuteRequest(
                tool="sleepy", arguments=to_struct({"text": "x"}), local_only=True, target_node_id="d-b"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_all_candidates_down_is_unavailable_with_failed_over() -> None:
    async with running("u-a") as a:
        async with running("u-b", a.address) as b:
            await tools_of(b).registry.add(EchoTool())
            await eventually(lambda: sees(a, b, "echo"), what="a to see b's echo")
            record = a.peers.get("u-b")
        # b stopped, but (peer timeout 60 s) a still lists it; put it back if its goodbye removed it.
        assert record is not None
        if "u-b" not in a.peers:
            a.peers.upsert(record.info, "static")
        response = await tools_of(a).router.execute("echo", {"text": "x"})
        assert response.error.code == "UNAVAILABLE" and list(response.failed_over) == ["u-b"]
        assert "u-b" in response.error.message


class FakeBridge(RoleComponent):
    """Stands in for the bridge component: mobile 'phone-1' is gone, 'phone-2' answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any], float]] = []

    async def execute_on_mobile(self, node_id: str, tool: str, arguments: dict[str, Any],
                                timeout_s: float) -> ToolOutcome:
        self.calls.append((node_id, tool, arguments, timeout_s))
        if node_id == "phone-1":
            raise ToolFailure("UNAVAILABLE", "phone-1 is not connected")
        if arguments.get("text") == "bad":
            raise InvalidArguments("text: the phone refused it")
        return ToolOutcome(result={"text": f"{arguments['text']} from {node_id}"}, duration_ms=3.0)

    def mobile_tool_specs(self) -> list[common_pb2.ToolSpec]:
        return []


def mobile(node_id: str, bridge: LlmlabNode) -> common_pb2.NodeInfo:
    return common_pb2.NodeInfo(node_id=node_id, name=node_id, kind=common_pb2.NODE_KIND_MOBILE,
                               via_node_id=bridge.node_id, tools=["phone_echo"], mesh_id=bridge.mesh_id)


async def test_mobile_nodes_through_their_bridge() -> None:
    async with running("m-a") as a, running("m-bridge", a.address) as bridge_node:
        bridge = FakeBridge()
        tools_of(bridge_node).mobile.set(bridge)  # the port the node hands the tools role from its bridge role
        for node in (a, bridge_node):  # as the bridge's hub and its heartbeats would
            node.peers.upsert(mobile("phone-1", bridge_node), "bridge")
            node.peers.upsert(mobile("phone-2", bridge_node), "bridge")
        await eventually(lambda: bridge_node.node_id in a.peers, what="a to see the bridge")
        router = tools_of(a).router
        response = await router.execute("phone_echo", {"text": "hi"})
        assert (response.node_id, response.node_name) == ("phone-2", "phone-2")
        assert from_struct(response.result) == {"text": "hi from phone-2"}
        assert list(response.failed_over) == ["phone-1"]
        assert [c[0] for c in bridge.calls] == ["phone-1", "phone-2"]
        # On the bridge itself the router calls the bridge directly.
        direct = await tools_of(bridge_node).router.execute("phone_echo", {"text": "yo"}, target_node_id="phone-2")
        assert direct.node_id == "phone-2"
        with pytest.raises(InvalidArguments, match="phone refused"):
            await router.execute("phone_echo", {"text": "bad"}, target_node_id="phone-2")
        gone = await router.execute("phone_echo", {"text": "x"}, target_node_id="phone-1")
        assert gone.error.code == "UNAVAILABLE" and list(gone.failed_over) == ["phone-1"]
        listed = await call(a, "ListTools", tool_executor_pb2.ListToolsRequest())
        phone = {t.name: t for t in listed.tools}["phone_echo"]
        assert set(phone.node_ids) == {"phone-1", "phone-2"}
