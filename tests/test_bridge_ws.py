"""The bridge's WebSocket protocol and JSON API against real node processes, with the `websockets` client.

One bridge node (role ``bridge`` only, so its ToolExecutor is the bridge's own) and one
plain node seeded with it serve the whole module; every test pairs its own clients.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from llmlab_grpc.bridge.client import MobileClient, PairingRefused
from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.procs import NodeProcess, spawn_node
from llmlab_grpc.proto.llmlab.v1 import common_pb2, node_pb2, node_pb2_grpc, tool_executor_pb2, tool_executor_pb2_grpc
from tests.bridge_support import eventually, get_json, http_url, pairing_token, peers_of
from tests.conftest import ARTIFACTS

HTTP_FETCH = {"name": "http_fetch", "description": "test fetch", "timeoutMs": 5000,
              "inputSchema": {"type": "object", "properties": {"url": {"type": "string"}}}}


@pytest.fixture(scope="module")
def mesh() -> Iterator[dict[str, Any]]:
    secret = secrets.token_urlsafe(24)
    ARTIFACTS.mkdir(exist_ok=True)
    env = {"LLMLAB_BRIDGE_HEARTBEAT_MS": "300"}
    bridge = spawn_node("wsbridge", secret, "--roles", "bridge", "--no-mdns", "--heartbeat-interval", "0.3",
                        env=env, log_dir=ARTIFACTS)
    other: NodeProcess | None = None
    try:
        other = spawn_node("wsother", secret, "--roles", "planner", "--no-mdns", "--heartbeat-interval", "0.3",
                           "--peer", bridge.address, log_dir=ARTIFACTS)
        yield {"bridge": bridge, "other": other, "secret": secret, "url": http_url(bridge)}
    finally:
        for node in (other, bridge):
            if node is not None:
                node.stop(signal.SIGTERM, timeout=10)


async def paired(mesh: dict[str, Any], **kwargs: Any) -> tuple[MobileClient, asyncio.Task[None]]:
    client = MobileClient(mesh["url"], pairing_token(mesh["url"]), **kwargs)
    await client.connect()
    return client, asyncio.create_task(client.run())


async def recv_error(ws: Any, timeout: float = 5.0) -> dict[str, Any]:
    """The next error message (skipping the bridge's heartbeats)."""
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if "error" in message:
                return dict(message["error"])


async def test_paired_mobile_node_is_a_peer_everywhere(mesh: dict[str, Any]) -> None:
    client, runner = await paired(mesh, name="phone", tools=[HTTP_FETCH])
    welcome = client.welcome
    assert welcome["nodeId"].startswith("mobile-")
    assert welcome["bridgeNodeId"] == "wsbridge"
    assert welcome["sessionToken"] and int(welcome["maxMessageBytes"]) == 256 * 1024
    on_bridge = await eventually(lambda: peers_of(mesh["bridge"]).get(client.node_id), 5, "row on the bridge")
    assert on_bridge.info.kind == common_pb2.NODE_KIND_MOBILE and on_bridge.source == "bridge"
    assert list(on_bridge.info.tools) == ["http_fetch"] and list(on_bridge.info.roles) == ["mobile"]

    # The other node learns it from its heartbeats to the bridge, and the CLI shows it.
    seen = await eventually(lambda: peers_of(mesh["other"]).get(client.node_id), 10, "row on the other node")
    assert seen.info.via_node_id == "wsbridge" and seen.source == "bridge"
    assert seen.state == common_pb2.PEER_STATE_ALIVE
    cli = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "llmlab_grpc", "peers", "--json", "--target", mesh["other"].address,
        "--secret", mesh["secret"]], capture_output=True, text=True, timeout=30)
    assert cli.returncode == 0 and cli.stdout, f"llmlab peers failed ({cli.returncode}): {cli.stderr.strip()}"
    rows = {r["name"]: r for r in json.loads(cli.stdout)}
    assert "phone" in rows and rows["phone"]["roles"] == ["mobile"] and rows["phone"]["address"] == ""

    # Disconnect removes it on the bridge at once and on the other node soon after.
    await client.close()
    await runner
    await eventually(lambda: client.node_id not in peers_of(mesh["bridge"]), 5, "row gone on the bridge")
    await eventually(lambda: client.node_id not in peers_of(mesh["other"]), 10, "row gone on the other node")


async def test_wrong_or_missing_token_is_refused_and_closed(mesh: dict[str, Any]) -> None:
    for token in ("not-a-token", ""):
        client = MobileClient(mesh["url"], token)
        with pytest.raises(PairingRefused) as refused:
            await client.connect()
        assert refused.value.code == "UNAUTHENTICATED"
        assert client.ws is not None
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(client.ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_bad_messages_get_errors_and_the_socket_stays_usable(mesh: dict[str, Any]) -> None:
    async with connect(mesh["url"].replace("http", "ws") + "/ws/task") as ws:
        await ws.send(json.dumps({"id": "1", "heartbeat": {}}))
        assert (await recv_error(ws))["code"] == "UNAUTHENTICATED"  # not paired yet, still open
        token = await asyncio.to_thread(pairing_token, mesh["url"])
        await ws.send(json.dumps({"id": "2", "hello": {"pairingToken": token, "name": "probe"}}))
        welcome = json.loads(await ws.recv())
        assert welcome["id"] == "2" and "welcome" in welcome
        cases: list[tuple[Any, str, str]] = [
            ("this is not json", "INVALID_ARGUMENT", "not valid JSON"),
            ("[1, 2]", "INVALID_ARGUMENT", "JSON object"),
            (json.dumps({"id": "7", "bogus": {}}), "INVALID_ARGUMENT", "bogus"),
            (json.dumps({"id": "8"}), "INVALID_ARGUMENT", "no message"),
            (json.dumps({"id": "9", "welcome": {"nodeId": "x"}}), "INVALID_ARGUMENT", "sent by the bridge"),
            (json.dumps({"id": "10", "taskResult": {"taskId": "nope"}}), "NOT_FOUND", "no pending task"),
            (json.dumps({"id": "11", "hello": {"pairingToken": token}}), "INVALID_ARGUMENT", "already paired"),
            (json.dumps({"heartbeat": {"busy": "many"}}), "INVALID_ARGUMENT", "BridgeEnvelope"),
            (b"\x00\x01binary", "INVALID_ARGUMENT", "binary frames"),
        ]
        for raw, code, words in cases:
            await ws.send(raw)
            err = await recv_error(ws)
            assert err["code"] == code and words in err["message"], (raw, err)
        # Still paired and alive: a heartbeat is accepted and the row stays.
        await ws.send(json.dumps({"heartbeat": {"cacheEntries": "3"}}))
        node_id = welcome["welcome"]["nodeId"]
        row = await eventually(lambda: peers_of(mesh["bridge"]).get(node_id), 5, "row after bad messages")
        assert row.info.name == "probe"


async def test_size_and_rate_limits(mesh: dict[str, Any]) -> None:
    client, runner = await paired(mesh)
    assert client.ws is not None
    big = json.dumps({"heartbeat": {"currentTask": "x" * (300 * 1024)}})
    await client.ws.send(big)
    await eventually(lambda: any(e["code"] == "RESOURCE_EXHAUSTED" and "limit" in e["message"]
                                 for e in client.errors), 5, "size refusal")
    client.errors.clear()
    for _ in range(80):  # burst 40, 20/s: some of these are over the limit
        await client.ws.send(json.dumps({"heartbeat": {}}))
    await eventually(lambda: any("rate limit" in e["message"] for e in client.errors), 5, "rate refusal")
    assert all(e["code"] == "RESOURCE_EXHAUSTED" for e in client.errors)
    await asyncio.sleep(2.1)  # the bucket refills: the socket works again
    client.errors.clear()
    await client.ws.send(json.dumps({"heartbeat": {}}))
    await client.ws.send(json.dumps({"id": "x", "taskResult": {"taskId": "none"}}))
    await eventually(lambda: client.errors, 5, "an answer after the refill")
    assert client.errors[0]["code"] == "NOT_FOUND"
    await client.close()
    await runner


async def test_origin_is_checked(mesh: dict[str, Any]) -> None:
    url = mesh["url"].replace("http", "ws") + "/ws/task"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    token = await asyncio.to_thread(pairing_token, mesh["url"])
    for origin in (mesh["url"], mesh["url"].replace("127.0.0.1", "localhost")):
        client = MobileClient(mesh["url"], token, origin=origin)
        assert (await client.connect())["nodeId"]
        await client.close()


async def test_task_round_trip_and_disconnect(mesh: dict[str, Any]) -> None:
    release = asyncio.Event()

    async def handler(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("url") == "hang":
            await release.wait()
        return {"status": 200, "text": f"fetched {args['url']}"}

    client, runner = await paired(mesh, name="fetcher", tools=[HTTP_FETCH], handler=handler)
    request = tool_executor_pb2.ExecuteRequest(tool="http_fetch", target_node_id=client.node_id)
    request.arguments.update({"url": "http://127.0.0.1:1/page"})

    def execute(req: tool_executor_pb2.ExecuteRequest, timeout: float = 10.0) -> Any:
        return mesh["bridge"].call(tool_executor_pb2_grpc.ToolExecutorStub, "Execute", req, timeout=timeout)

    reply = await asyncio.to_thread(execute, request)
    assert reply.node_id == client.node_id and reply.node_name == "fetcher"
    assert reply.result["status"] == 200 and reply.result["text"] == "fetched http://127.0.0.1:1/page"
    assert not reply.HasField("error")

    # ListTools of the bridge shows the mobile tool with its owner.
    tools = await asyncio.to_thread(mesh["bridge"].call, tool_executor_pb2_grpc.ToolExecutorStub, "ListTools",
                                    tool_executor_pb2.ListToolsRequest())
    spec = next(t for t in tools.tools if t.name == "http_fetch")
    assert client.node_id in spec.node_ids

    # The device disconnects in the middle of a task: UNAVAILABLE, naming the device.
    request.arguments.update({"url": "hang"})
    pending = asyncio.ensure_future(asyncio.to_thread(execute, request))
    await eventually(lambda: client._running, 5, "the task to reach the device")
    await client.close()
    await runner
    with pytest.raises(grpc.RpcError) as failed:
        await pending
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "fetcher" in failed.value.details()
    release.set()


async def test_deadline_and_tool_errors(mesh: dict[str, Any]) -> None:
    async def handler(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        if args["url"] == "slow":
            await asyncio.sleep(30)
        raise RuntimeError("the page said no")

    fast = {**HTTP_FETCH, "timeoutMs": 400}
    client, runner = await paired(mesh, name="slowpoke", tools=[fast], handler=handler)
    request = tool_executor_pb2.ExecuteRequest(tool="http_fetch", target_node_id=client.node_id)
    request.arguments.update({"url": "slow"})
    with pytest.raises(grpc.RpcError) as late:
        await asyncio.to_thread(mesh["bridge"].call, tool_executor_pb2_grpc.ToolExecutorStub, "Execute", request)
    assert late.value.code() == grpc.StatusCode.UNAVAILABLE and "did not answer" in late.value.details()
    request.arguments.update({"url": "boom"})
    reply = await asyncio.to_thread(mesh["bridge"].call, tool_executor_pb2_grpc.ToolExecutorStub, "Execute",
                                    request)
    assert reply.error.code == "FAILED" and "the page said no" in reply.error.message
    await client.close()
    await runner


async def test_rejoin_with_session_token_only_for_its_node(mesh: dict[str, Any]) -> None:
    first, runner = await paired(mesh, name="roamer")
    node_id, session = first.node_id, first.welcome["sessionToken"]
    await first.close()
    await runner
    again = MobileClient(mesh["url"], "", resume=(node_id, session))
    assert (await again.connect())["nodeId"] == node_id
    await again.close()
    thief = MobileClient(mesh["url"], "", resume=("mobile-someoneelse", session))
    with pytest.raises(PairingRefused) as refused:
        await thief.connect()
    assert refused.value.code == "UNAUTHENTICATED"


async def test_silent_device_is_dropped(mesh: dict[str, Any]) -> None:
    client, runner = await paired(mesh, name="sleepy", heartbeat=False)
    await eventually(lambda: client.node_id in peers_of(mesh["bridge"]), 5, "row")
    await asyncio.wait_for(runner, 10)  # the bridge closes it after ~3 missed heartbeats
    assert any(e["code"] == "DEADLINE_EXCEEDED" for e in client.errors)
    await eventually(lambda: client.node_id not in peers_of(mesh["bridge"]), 5, "row gone")


async def test_status_api_access_and_content(mesh: dict[str, Any]) -> None:
    url = mesh["url"]
    client, runner = await paired(mesh, name="listed", tools=[HTTP_FETCH])
    status, nodes = await asyncio.to_thread(get_json, f"{url}/api/nodes")
    assert status == 200
    by_name = {n["name"]: n for n in nodes["nodes"]}
    assert by_name["wsbridge"]["state"] == "self" and by_name["wsbridge"]["http_url"] == url
    assert by_name["listed"]["kind"] == "mobile" and by_name["listed"]["via_name"] == "wsbridge"
    assert by_name["listed"]["mobile"]["user_agent"] == "llmlab-python-client"
    status, tools = await asyncio.to_thread(get_json, f"{url}/api/tools")
    assert status == 200 and "listed" in next(t for t in tools["tools"] if t["name"] == "http_fetch")["node_names"]
    status, tasks = await asyncio.to_thread(get_json, f"{url}/api/tasks")
    assert status == 200 and tasks["tasks"] == [] and tasks["note"] == "no tasks yet"
    assert tasks["sources"] == [{"node": "wsother", "ok": True, "tasks": 0, "error": ""}]
    status, cache = await asyncio.to_thread(get_json, f"{url}/api/cache")
    assert status == 200 and "total" in cache
    status, pairing = await asyncio.to_thread(get_json, f"{url}/api/pairing")
    assert status == 200 and pairing["pwa_url"] == f"{url}/#token={pairing['token']}"
    assert pairing["qr_svg"].startswith("data:image/svg+xml")

    # A loopback client naming a foreign Host (DNS rebinding) needs the secret; so does a wrong one.
    evil = {"Host": "evil.example"}
    assert (await asyncio.to_thread(get_json, f"{url}/api/pairing", evil))[0] == 401
    assert (await asyncio.to_thread(get_json, f"{url}/api/nodes", {**evil, "Authorization": "Bearer nope"}))[0] == 401
    ok = {**evil, "Authorization": f"Bearer {mesh['secret']}"}
    assert (await asyncio.to_thread(get_json, f"{url}/api/pairing", ok))[0] == 200
    await client.close()
    await runner


def test_gossip_keeps_grpc_peers_and_mobile_rows_need_their_bridge(mesh: dict[str, Any]) -> None:
    """A heartbeat answer lists mobile nodes only with via = the answering bridge."""
    with grpc.insecure_channel(mesh["bridge"].address) as channel:
        reply = node_pb2_grpc.NodeStub(channel).Heartbeat(
            node_pb2.HeartbeatRequest(sender=common_pb2.NodeInfo(node_id="probe", mesh_id="other-mesh")),
            metadata=bearer(mesh["secret"]), timeout=5)
    assert all(i.kind != common_pb2.NODE_KIND_MOBILE or i.via_node_id == "wsbridge" for i in reply.known_peers)
    assert "wsother" in {i.name for i in reply.known_peers}
