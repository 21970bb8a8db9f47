"""The bridge's HTTP side under attack (issue 16), against one real bridge node process.

Each test's input is the attack itself: a borrowed ``Host`` header and a request through a
proxy on loopback, a one-time dashboard link used twice, slowloris and idle sockets, a
trickled body, more sockets than the cap, deeply nested JSON on ``/v1`` and on the
WebSocket, and a WebSocket client flooding just over the rate limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from llmlab_grpc.bridge.client import MobileClient
from llmlab_grpc.procs import spawn_node
from llmlab_grpc.proto.llmlab.v1 import tool_executor_pb2, tool_executor_pb2_grpc
from tests.bridge_support import http_url, pairing_token
from tests.conftest import ARTIFACTS

PROXY_HOST = "bridge.example.com:8443"
"""An allowed WebSocket origin's host: what a reverse proxy on this machine forwards as Host."""
HEADER_TIMEOUT_S = 1.0
IDLE_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 24
LINK_RE = re.compile(r"^llmlab node \S+ dashboard-link (?P<url>\S+)$")


@pytest.fixture(scope="module")
def bridge() -> Iterator[dict[str, Any]]:
    secret = secrets.token_urlsafe(24)
    ARTIFACTS.mkdir(exist_ok=True)
    node = spawn_node("secbridge", secret, "--roles", "bridge", "--no-mdns",
                      "--bridge-origin", f"https://{PROXY_HOST}",
                      "--http-header-timeout", str(HEADER_TIMEOUT_S), "--http-idle-timeout", str(IDLE_TIMEOUT_S),
                      "--http-max-connections", str(MAX_CONNECTIONS), log_dir=ARTIFACTS)
    try:
        url = http_url(node)
        yield {"node": node, "secret": secret, "url": url, "port": int(url.rsplit(":", 1)[1])}
    finally:
        node.stop(signal.SIGTERM, timeout=10)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


def request(url: str, headers: dict[str, str] | None = None, method: str = "GET",
            data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) without following redirects."""
    opener = urllib.request.build_opener(_NoRedirect)
    req = urllib.request.Request(url, headers=headers or {}, method=method, data=data)
    try:
        with opener.open(req, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


# -- loopback trust (item 3) ----------------------------------------------------------------------------------

def test_a_borrowed_host_header_is_refused(bridge: dict[str, Any]) -> None:
    url = f"{bridge['url']}/api/pairing"
    assert request(url)[0] == 200  # this machine, naming itself: the local dashboard keeps working
    assert request(url, {"Host": f"localhost:{bridge['port']}"})[0] == 200
    # The attack: a loopback client naming an allowed --bridge-origin host. It got 200 before.
    status, _, body = request(url, {"Host": PROXY_HOST})
    assert status == 401 and "dashboard session" in json.loads(body)["error"]
    # The same request as a reverse proxy on this machine sends it, Host rewritten or not.
    for proxied in ({"Host": f"127.0.0.1:{bridge['port']}", "X-Forwarded-For": "203.0.113.9"},
                    {"Host": f"127.0.0.1:{bridge['port']}", "Forwarded": "for=203.0.113.9"},
                    {"Host": f"127.0.0.1:{bridge['port']}", "Via": "1.1 proxy"}):
        assert request(url, proxied)[0] == 401, proxied
    # Another port on loopback is not this server's name either.
    assert request(url, {"Host": f"127.0.0.1:{bridge['port'] + 1}"})[0] == 401
    # Behind the proxy the mesh secret still works.
    assert request(url, {"Host": PROXY_HOST, "Authorization": f"Bearer {bridge['secret']}"})[0] == 200
    assert request(url, {"Host": PROXY_HOST, "Authorization": "Bearer wrong"})[0] == 401


def test_a_one_time_dashboard_link_gives_a_session_once(bridge: dict[str, Any]) -> None:
    printed = next(m.group("url") for line in bridge["node"].output if (m := LINK_RE.match(line.strip())))
    assert printed.startswith(f"{bridge['url']}/llmlab?token=")
    via_proxy = {"Host": PROXY_HOST, "X-Forwarded-Proto": "https"}
    link = printed
    status, headers, _ = request(link, via_proxy)
    assert status == 303 and headers["location"] == "/llmlab"
    cookie = headers["set-cookie"]
    name_value = cookie.split(";", 1)[0]
    flags = {f.strip().split("=")[0].lower() for f in cookie.split(";")[1:]}
    assert {"httponly", "secure", "path", "max-age", "samesite"} <= flags and "SameSite=Strict" in cookie
    api = f"{bridge['url']}/api/pairing"
    assert request(api, {**via_proxy, "Cookie": name_value})[0] == 200
    assert request(f"{bridge['url']}/api/nodes", {**via_proxy, "Cookie": name_value})[0] == 200
    # The token is spent: a second use (someone who saw the link) gets nothing.
    status, headers, body = request(link, via_proxy)
    assert status == 403 and "set-cookie" not in {k.lower() for k in headers} and b"llmlab dashboard" in body
    # A forged or foreign cookie is no session.
    forged = name_value[: -2] + ("AA" if not name_value.endswith("AA") else "BB")
    assert request(api, {**via_proxy, "Cookie": forged})[0] == 401
    # A session cannot mint links; the secret and this machine can, and each is one-time too.
    assert request(f"{bridge['url']}/api/dashboard-link", {**via_proxy, "Cookie": name_value}, "POST", b"")[0] == 401
    status, _, body = request(f"{bridge['url']}/api/dashboard-link", {}, "POST", b"")
    assert status == 200 and json.loads(body)["url"].startswith(f"{bridge['url']}/llmlab?token=")


def test_llmlab_dashboard_prints_a_fresh_link(bridge: dict[str, Any]) -> None:
    done = subprocess.run([sys.executable, "-m", "llmlab_grpc", "dashboard", "--url", bridge["url"]],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LLMLAB_MESH_SECRET": bridge["secret"]})
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip()
    assert request(link, {"Host": PROXY_HOST})[0] == 303
    wrong = subprocess.run([sys.executable, "-m", "llmlab_grpc", "dashboard", "--url", bridge["url"],
                            "--secret", "not-the-secret"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 1 and "401" in wrong.stderr


# -- HTTP connection limits (item 5) ------------------------------------------------------------------------

def _closed_by_server(sock: socket.socket, trickle: bytes, every_s: float, within_s: float) -> bytes:
    """Send ``trickle`` every ``every_s`` until the server closes the socket; what it sent before closing."""
    started = time.monotonic()
    received = b""
    sock.settimeout(every_s)
    while time.monotonic() - started < within_s:
        try:
            data = sock.recv(4096)
            if data == b"":
                return received
            received += data
        except TimeoutError:
            pass
        except ConnectionResetError:
            return received
        try:
            if trickle:
                sock.sendall(trickle)
        except (BrokenPipeError, ConnectionResetError):
            return received
    raise AssertionError(f"the server kept the socket open for {within_s} s")


def test_a_slowloris_socket_is_closed_by_the_server(bridge: dict[str, Any]) -> None:
    with socket.create_connection(("127.0.0.1", bridge["port"]), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # One header line every 0.2 s: bytes keep coming, the headers never end.
        answered = _closed_by_server(sock, b"X-Slow: a\r\n", 0.2, within_s=20 * HEADER_TIMEOUT_S)
    assert answered == b""  # closed by the header deadline: no request was ever answered (nor refused as bad)


def test_idle_and_trickled_body_sockets_are_closed(bridge: dict[str, Any]) -> None:
    with socket.create_connection(("127.0.0.1", bridge["port"]), timeout=5) as idle:
        _closed_by_server(idle, b"", 0.2, within_s=20 * IDLE_TIMEOUT_S)
    with socket.create_connection(("127.0.0.1", bridge["port"]), timeout=5) as slow_body:
        slow_body.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                          f"{bridge['secret']}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                          '{"model": '.encode())
        _closed_by_server(slow_body, b"", 0.2, within_s=20 * IDLE_TIMEOUT_S)
    # A keep-alive connection that goes quiet after a response is closed too; one in use is not.
    with socket.create_connection(("127.0.0.1", bridge["port"]), timeout=5) as kept:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _closed_by_server(kept, b"", 0.2, within_s=20 * IDLE_TIMEOUT_S).startswith(b"HTTP/1.1 200")


def test_connections_beyond_the_cap_are_closed_and_service_resumes(bridge: dict[str, Any]) -> None:
    held: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS + 8):
            held.append(socket.create_connection(("127.0.0.1", bridge["port"]), timeout=5))
        closed = 0
        for sock in held:
            sock.settimeout(0.5)
            try:
                closed += sock.recv(1) == b""
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed += 1
        assert closed >= 8  # at most MAX_CONNECTIONS stay open
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # the server notices the closed sockets and serves again
        try:
            if request(f"{bridge['url']}/healthz")[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the bridge did not serve again after the sockets closed"
        time.sleep(0.1)


# -- hostile JSON and floods (item 5) ---------------------------------------------------------------------

@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_json_is_a_400_with_a_json_error(bridge: dict[str, Any], depth: int) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": ' + b"[" * depth \
        + b"]" * depth + b"}"
    status, headers, raw = request(f"{bridge['url']}/v1/chat/completions",
                                   {"Authorization": f"Bearer {bridge['secret']}",
                                    "Content-Type": "application/json"}, "POST", body)
    assert status == 400 and headers["content-type"].startswith("application/json")
    error = json.loads(raw)["error"]
    assert error["code"] == "invalid_json" and "nested deeper than 64" in error["message"]


async def test_deeply_nested_json_on_the_websocket_is_refused_and_the_socket_stays(bridge: dict[str, Any]) -> None:
    token = await asyncio.to_thread(pairing_token, bridge["url"])
    async with connect(bridge["url"].replace("http", "ws") + "/ws/task") as ws:
        await ws.send(json.dumps({"id": "1", "hello": {"pairingToken": token, "name": "nested"}}))
        assert "welcome" in json.loads(await ws.recv())
        for depth in (200, 50_000):
            await ws.send('{"id": "2", "heartbeat": {"currentTask": ' + "[" * depth + "]" * depth + "}}")
            async with asyncio.timeout(5):
                while "error" not in (message := json.loads(await ws.recv())):
                    pass
            assert message["error"]["code"] == "INVALID_ARGUMENT" and "deeper than 64" in message["error"]["message"]
        await ws.send(json.dumps({"id": "3", "taskResult": {"taskId": "none"}}))
        async with asyncio.timeout(5):
            while "error" not in (message := json.loads(await ws.recv())):
                pass
        assert message["error"]["code"] == "NOT_FOUND"  # still paired and answering


async def test_a_steady_flooder_is_cut_off(bridge: dict[str, Any]) -> None:
    """Twice the allowed rate, steadily: accepted messages between refusals used to reset the count."""
    client = MobileClient(bridge["url"], await asyncio.to_thread(pairing_token, bridge["url"]), name="flooder",
                          heartbeat=False)
    await client.connect()
    runner = asyncio.create_task(client.run())
    assert client.ws is not None
    sent = 0
    try:
        async with asyncio.timeout(20):  # 50 refusals at 20 a second over the rate take ~5 s
            while not runner.done():
                await client.ws.send('{"heartbeat": {}}')
                sent += 1
                await asyncio.sleep(1 / 40)
    except ConnectionClosed:
        pass
    await asyncio.wait_for(runner, 5)
    assert client.ws.close_code == 1008
    refusals = [e for e in client.errors if e["code"] == "RESOURCE_EXHAUSTED"]
    assert 40 <= len(refusals) <= 60 and "refusals within" in refusals[-1]["message"]
    assert sent < 40 * 20


# -- device tools never reach the mesh (item 3) -------------------------------------------------------------

async def test_a_device_tool_is_never_sent_to_the_mesh_own_ports(bridge: dict[str, Any]) -> None:
    """A phone's http_fetch runs in a page served by this bridge: fetching /api/pairing would be local."""
    seen: list[str] = []

    async def handler(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        seen.append(args["url"])
        return {"status": 200, "text": "fetched"}

    spec = {"name": "http_fetch", "description": "test fetch", "timeoutMs": 5000,
            "inputSchema": {"type": "object", "properties": {"url": {"type": "string"}}}}
    client = MobileClient(bridge["url"], await asyncio.to_thread(pairing_token, bridge["url"]), name="fetcher",
                          tools=[spec], handler=handler)
    await client.connect()
    runner = asyncio.create_task(client.run())
    node = bridge["node"]

    def fetch(url: str) -> tool_executor_pb2.ExecuteResponse:
        request = tool_executor_pb2.ExecuteRequest(tool="http_fetch", target_node_id=client.node_id)
        request.arguments.update({"url": url})
        return node.call(tool_executor_pb2_grpc.ToolExecutorStub, "Execute", request, timeout=10)

    try:
        for url in (f"{bridge['url']}/api/pairing", f"http://localhost:{bridge['port']}/api/pairing",
                    f"http://{node.address}/"):
            reply = await asyncio.to_thread(fetch, url)
            assert reply.error.code == "REFUSED" and "server of this llmlab mesh" in reply.error.message, url
        assert seen == []  # refused at the bridge: the device never got the task
        reply = await asyncio.to_thread(fetch, "http://127.0.0.1:1/page")
        assert reply.result["text"] == "fetched" and seen == ["http://127.0.0.1:1/page"]
    finally:
        await client.close()
        await runner
