"""A tool of a mobile node (a WebSocket client paired with a bridge) called through another node's router."""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from llmlab_grpc.bridge.client import MobileClient
from llmlab_grpc.procs import NodeProcess, spawn_node
from llmlab_grpc.proto.llmlab.v1 import tool_executor_pb2, tool_executor_pb2_grpc
from llmlab_grpc.tools.convert import from_struct, to_struct
from tests.bridge_support import eventually, http_url, pairing_token
from tests.conftest import ARTIFACTS

PHONE_TOOL = {"name": "phone_echo", "description": "echo on a phone", "timeoutMs": 5000,
              "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}
Stub = tool_executor_pb2_grpc.ToolExecutorStub


@pytest.fixture(scope="module")
def mesh() -> Iterator[dict[str, Any]]:
    secret = secrets.token_urlsafe(24)
    ARTIFACTS.mkdir(exist_ok=True)
    nodes: list[NodeProcess] = []
    try:
        # The bridge also has the tools role, so its ToolExecutor is the tools component's, which calls
        # the bridge's execute_on_mobile for calls addressed to its phones.
        bridge = spawn_node("mt-bridge", secret, "--roles", "bridge,tools", "--tools", "none", "--no-mdns",
                            "--heartbeat-interval", "0.3",
                            env={"LLMLAB_BRIDGE_HEARTBEAT_MS": "300", "LLMLAB_BRIDGE_MOBILE_TOOLS": "phone_echo"},
                            log_dir=ARTIFACTS)
        nodes.append(bridge)
        router = spawn_node("mt-router", secret, "--roles", "tools", "--tools", "none", "--no-mdns",
                            "--heartbeat-interval", "0.3", "--peer", bridge.address, log_dir=ARTIFACTS)
        nodes.append(router)
        yield {"bridge": bridge, "router": router, "url": http_url(bridge)}
    finally:
        for node in nodes:
            node.stop(signal.SIGTERM, timeout=10)


def execute(node: NodeProcess, **arguments: Any) -> tool_executor_pb2.ExecuteResponse:
    request = tool_executor_pb2.ExecuteRequest(tool="phone_echo", arguments=to_struct(arguments))
    return node.call(Stub, "Execute", request, timeout=15)


def owners(node: NodeProcess) -> list[str]:
    reply = node.call(Stub, "ListTools", tool_executor_pb2.ListToolsRequest(), timeout=5)
    return sorted(n for t in reply.tools if t.name == "phone_echo" for n in t.node_ids)


async def test_router_reaches_a_phone_through_its_bridge(mesh: dict[str, Any]) -> None:
    async def handler(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"text": f"{args['text']} from the phone"}

    phone = MobileClient(mesh["url"], await asyncio.to_thread(pairing_token, mesh["url"]), name="pixel",
                         tools=[PHONE_TOOL], handler=handler)
    await phone.connect()
    runner = asyncio.create_task(phone.run())
    try:
        await eventually(lambda: owners(mesh["router"]) == [phone.node_id], 15, "the router to list the phone's tool")
        reply = await asyncio.to_thread(execute, mesh["router"], text="hi")
        assert not reply.HasField("error"), reply.error
        assert (reply.node_id, reply.node_name) == (phone.node_id, "pixel")
        assert from_struct(reply.result) == {"text": "hi from the phone"}
        assert list(reply.failed_over) == []
    finally:
        await phone.close()
        await runner
    # Once the phone is gone the tool is gone from the mesh: NOT_FOUND (or UNAVAILABLE while news travels).
    await eventually(lambda: owners(mesh["router"]) == [], 15, "the phone's tool to leave the router's list")
