"""Mobile nodes in a real Chromium (Playwright driving /usr/bin/chromium) against a real mesh.

The mesh: ``bb`` (bridge, tools, cache) and ``bt`` (tools, planner) as node processes,
a local HTTP server with CORS for ``http_fetch`` to read, and PWA pages opened in
their own browser contexts (each context is one device with its own storage). One
browser serves the whole module.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from llmlab_grpc.bridge.client import MobileClient
from llmlab_grpc.procs import NodeProcess, spawn_node
from llmlab_grpc.proto.llmlab.v1 import (
    cache_pb2,
    cache_pb2_grpc,
    planner_pb2,
    planner_pb2_grpc,
)
from tests.bridge_support import eventually, http_url, pairing_token, peers_of
from tests.conftest import ARTIFACTS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # A name that is not loopback, as a reverse proxy's host would be (no DNS query leaves).
                 "--host-resolver-rules=MAP dash.test 127.0.0.1"]
PROXIED = "dash.test"
PHONE = {"width": 390, "height": 844}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's Chromium at /usr/bin/chromium"),
]


class _Pages(BaseHTTPRequestHandler):
    """The web the mobile nodes fetch from: CORS open, one page that waits to be released."""

    release = threading.Event()

    def do_GET(self) -> None:
        if self.path.startswith("/redirect?to="):  # a page on the web that sends the browser to the mesh
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect?to="))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/slow"):
            self.release.wait(30)
        body = f"hello from the test server at {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _Pages.release.set()
    server.shutdown()


@pytest.fixture(scope="module")
def mesh() -> Iterator[dict[str, Any]]:
    secret = secrets.token_urlsafe(24)
    ARTIFACTS.mkdir(exist_ok=True)
    env = {"LLMLAB_BRIDGE_HEARTBEAT_MS": "500"}
    common = ["--no-mdns", "--heartbeat-interval", "0.5", "--tools", "calculator"]
    nodes: list[NodeProcess] = []
    try:
        # bb also runs the browser tool with --allow-private-urls: local pages allowed, the mesh itself never.
        bridge = spawn_node("bb", secret, "--roles", "bridge,tools,cache", "--cache-store", "memory", *common,
                            "--tools", "calculator,browser", "--allow-private-urls", env=env, log_dir=ARTIFACTS)
        nodes.append(bridge)
        nodes.append(spawn_node("bt", secret, "--roles", "tools,planner", "--peer", bridge.address, *common,
                                log_dir=ARTIFACTS))
        yield {"bridge": bridge, "tools": nodes[1], "secret": secret, "url": http_url(bridge)}
    finally:
        for node in reversed(nodes):
            node.stop(signal.SIGTERM, timeout=10)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


async def open_mobile(browser: Browser, mesh: dict[str, Any]) -> tuple[BrowserContext, Page, str]:
    """A phone-sized device opening the QR code's URL; returns once it is paired."""
    context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = await context.new_page()
    token = await asyncio.to_thread(pairing_token, mesh["url"])
    await page.goto(f"{mesh['url']}/#token={token}")
    await page.wait_for_function("() => window.llmlabWorker && window.llmlabWorker.state === 'paired'", timeout=15000)
    assert "#token" not in page.url  # the credential leaves the address bar
    node_id = await page.evaluate("window.llmlabWorker.nodeId")
    await page.locator("#state[data-state='paired']").wait_for(timeout=5000)
    return context, page, node_id


def cli(mesh: dict[str, Any], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmlab_grpc", *args, "--target", mesh["tools"].address],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "LLMLAB_MESH_SECRET": mesh["secret"]})


async def test_pwa_pairs_and_shows_in_peers_and_dashboard(browser: Browser, mesh: dict[str, Any]) -> None:
    context, page, node_id = await open_mobile(browser, mesh)
    try:
        assert node_id.startswith("mobile-")
        assert await page.locator("#node-id").text_content() == node_id
        await page.screenshot(path=str(ARTIFACTS / "pwa.png"))
        # The manifest and the service worker make it an installable PWA.
        manifest = await page.evaluate("fetch('/manifest.webmanifest').then(r => r.json())")
        assert manifest["display"] == "standalone" and {i["sizes"] for i in manifest["icons"]} >= {"192x192", "512x512"}
        await page.wait_for_function("() => navigator.serviceWorker.getRegistration().then(r => !!(r && r.active))",
                                     timeout=15000)

        def listed() -> dict[str, Any] | None:
            done = cli(mesh, "peers", "--json")
            return next((r for r in json.loads(done.stdout or "[]") if r["node_id"] == node_id), None)

        row = await eventually(listed, 15, "the mobile node in `llmlab peers` of another node")
        assert row["roles"] == ["mobile"] and row["state"] == "alive" and row["address"] == ""

        dashboard = await context.new_page()
        await dashboard.goto(f"{mesh['url']}/llmlab")
        mobile_row = dashboard.locator(f"tr[data-node-id='{node_id}']")
        await mobile_row.wait_for(timeout=10000)
        assert "mobile" in (await mobile_row.text_content() or "")
        assert await dashboard.locator("#nodes tbody tr").count() >= 3
    finally:
        await context.close()


async def test_http_fetch_runs_in_the_browser_through_the_cli(browser: Browser, mesh: dict[str, Any],
                                                               web: str) -> None:
    context, page, node_id = await open_mobile(browser, mesh)
    try:
        await eventually(lambda: node_id in peers_of(mesh["tools"]), 15, "bt to learn the mobile node")
        done = await asyncio.to_thread(cli, mesh, "tool", "http_fetch", "--arg", f"url={web}/hello", "--json")
        assert done.returncode == 0, done.stderr
        body = json.loads(done.stdout)
        assert body["node_id"] == node_id and body["failed_over"] == []
        result = body["result"]
        assert result["status"] == 200 and result["ok"] is True and result["truncated"] is False
        assert result["text"] == "hello from the test server at /hello"
        assert result["headers"]["content-type"].startswith("text/plain")
        await page.wait_for_function("() => window.llmlabWorker.tasksDone === 1")
        assert "/hello" in (await page.locator("#recent").text_content() or "")

        # A refused URL comes back as the tool's INVALID_ARGUMENT, not a crash.
        bad = await asyncio.to_thread(cli, mesh, "tool", "http_fetch", "--arg", "url=file:///etc/passwd", "--json")
        assert bad.returncode != 0 and "only http and https" in (bad.stdout + bad.stderr)
    finally:
        await context.close()


async def test_cache_sync_fills_the_page_replica(browser: Browser, mesh: dict[str, Any]) -> None:
    context, page, _ = await open_mobile(browser, mesh)
    bridge = mesh["bridge"]
    try:
        def put(prompt: str, response: str, ttl_ms: int = 0) -> str:
            reply = bridge.call(cache_pb2_grpc.CacheStub, "Put", cache_pb2.PutRequest(
                lookup=cache_pb2.CacheLookup(prompt=prompt, model="smollm2-135m"), response=response, ttl_ms=ttl_ms))
            return str(reply.key)

        key = await asyncio.to_thread(put, "What is the capital of France?", "Paris.")
        entry = await page.wait_for_function("k => window.llmlabWorker.replica.get(k)", arg=key, timeout=10000)
        replica = await entry.json_value()
        assert replica["response"] == "Paris." and replica["model"] == "smollm2-135m"

        # The local_cache tool answers from that replica, routed by the mesh to the page.
        done = await asyncio.to_thread(cli, mesh, "tool", "local_cache", "--arg", f"key={key}", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"] == {**json.loads(done.stdout)["result"], "found": True,
                                                     "response": "Paris."}

        # TTL is honoured in the browser: a short-lived entry arrives, then is dropped.
        short = await asyncio.to_thread(put, "ephemeral?", "gone soon", 1500)
        await page.wait_for_function("k => !!window.llmlabWorker.replica.get(k)", arg=short, timeout=10000)
        await page.wait_for_function("k => window.llmlabWorker.replica.get(k) === null", arg=short, timeout=10000)

        # A delete on the mesh reaches the replica too.
        await asyncio.to_thread(bridge.call, cache_pb2_grpc.CacheStub, "Delete", cache_pb2.DeleteRequest(key=key))
        await page.wait_for_function("k => window.llmlabWorker.replica.get(k) === null", arg=key, timeout=10000)

        # A device pairing later starts from a snapshot of the live entries.
        kept = await asyncio.to_thread(put, "What is 2 + 2?", "4")
        later, later_page, _ = await open_mobile(browser, mesh)
        try:
            await later_page.wait_for_function("k => !!window.llmlabWorker.replica.get(k)", arg=kept, timeout=10000)
        finally:
            await later.close()
    finally:
        await context.close()


async def test_disconnect_fails_over_then_unavailable(browser: Browser, mesh: dict[str, Any], web: str) -> None:
    async def backup_fetch(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"status": 200, "ok": True, "text": "from the python backup"}

    spec = {"name": "http_fetch", "description": "backup", "timeoutMs": 20000}
    backup = MobileClient(mesh["url"], await asyncio.to_thread(pairing_token, mesh["url"]), name="zz-backup",
                          tools=[spec], handler=backup_fetch)
    await backup.connect()
    backup_runner = asyncio.create_task(backup.run())
    context, page, node_id = await open_mobile(browser, mesh)  # named "headless": ranked before "zz-backup"
    try:
        await eventually(lambda: {node_id, backup.node_id} <= set(peers_of(mesh["tools"])), 15, "both mobiles")
        running = asyncio.ensure_future(asyncio.to_thread(
            cli, mesh, "tool", "http_fetch", "--arg", f"url={web}/slow", "--json"))
        await page.wait_for_function("() => (window.llmlabWorker.currentTask || '').includes('/slow')", timeout=15000)
        await context.close()  # the phone goes away in the middle of the task
        done = await running
        assert done.returncode == 0, done.stderr
        body = json.loads(done.stdout)
        assert body["node_id"] == backup.node_id and body["failed_over"] == [node_id]
        assert body["result"]["text"] == "from the python backup"
    finally:
        await backup.close()
        await backup_runner

    # Alone, a device that drops mid-task leaves a clear UNAVAILABLE naming it.
    context, page, node_id = await open_mobile(browser, mesh)
    try:
        await eventually(lambda: node_id in peers_of(mesh["tools"]) and backup.node_id not in peers_of(mesh["tools"]),
                         15, "only the page left with http_fetch")
        running = asyncio.ensure_future(asyncio.to_thread(
            cli, mesh, "tool", "http_fetch", "--arg", f"url={web}/slow2", "--json"))
        await page.wait_for_function("() => (window.llmlabWorker.currentTask || '').includes('/slow2')", timeout=15000)
        await page.close()
        done = await running
        body = json.loads(done.stdout)
        assert done.returncode == 1 and body["error"]["code"] == "UNAVAILABLE"
        assert body["failed_over"] == [node_id] and "went away" in body["error"]["message"]
    finally:
        await context.close()


async def test_dashboard_shows_the_mesh(browser: Browser, mesh: dict[str, Any]) -> None:
    bridge = mesh["bridge"]

    def traffic() -> None:
        """Cache hits and misses for the chart, and planner tasks with their trace."""
        lookup = cache_pb2.CacheLookup(prompt="What is 3 + 3?", model="smollm2-135m")
        bridge.call(cache_pb2_grpc.CacheStub, "Put", cache_pb2.PutRequest(lookup=lookup, response="6"))
        stub_args = cache_pb2.GetRequest(lookup=lookup)
        for _ in range(3):
            bridge.call(cache_pb2_grpc.CacheStub, "Get", stub_args)
        bridge.call(cache_pb2_grpc.CacheStub, "Get", cache_pb2.GetRequest(
            lookup=cache_pb2.CacheLookup(prompt="never stored", model="smollm2-135m")))
        for text in ("What is 25 * 67?", "(1 + 2) ** 10"):
            mesh["tools"].call(planner_pb2_grpc.PlannerStub, "Ask",
                               planner_pb2.AskRequest(query=planner_pb2.Query(text=text)), timeout=30)

    await asyncio.to_thread(traffic)
    phone, _, node_id = await open_mobile(browser, mesh)
    desk = await browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = await desk.new_page()
        await page.goto(f"{mesh['url']}/llmlab")
        await page.locator(f"tr[data-node-id='{node_id}']").wait_for(timeout=10000)
        await page.wait_for_function("() => document.querySelectorAll('#nodes tbody tr').length >= 3")
        await page.locator("#tasks li.task").first.wait_for(timeout=10000)
        trace = await page.locator("#tasks").text_content() or ""
        assert "25 * 67" in trace and "calculator" in trace
        await page.locator("#qr:not([hidden])").wait_for(timeout=10000)
        await page.wait_for_function("() => document.querySelectorAll('#hit-chart polyline').length === 1")
        await page.wait_for_function("() => Number(document.body.dataset.updated || 0) > 0")
        await page.wait_for_timeout(2500)  # a second poll so the chart has a line
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        names = await page.locator("#nodes tbody td.name").all_text_contents()
        assert any(n.startswith("bb") for n in names) and any(n.startswith("bt") for n in names)
    finally:
        await desk.close()
        await phone.close()


async def test_the_browser_tool_never_reads_the_mesh_itself(mesh: dict[str, Any], web: str) -> None:
    """With --allow-private-urls the browser tool connected from loopback and read /api/pairing (issue 16)."""
    base = mesh["url"]
    opened = await asyncio.to_thread(cli, mesh, "tool", "browser", "--arg", f"url={web}/local-page", "--json")
    assert opened.returncode == 0, opened.stderr  # a private page is allowed: the refusals below are specific
    assert "hello from the test server at /local-page" in json.loads(opened.stdout)["result"]["text"]
    for url in (f"{base}/api/pairing", base.replace("127.0.0.1", "localhost") + "/api/pairing",
                f"http://{mesh['tools'].address}/", f"{web}/redirect?to={base}/api/pairing"):
        done = await asyncio.to_thread(cli, mesh, "tool", "browser", "--arg", f"url={url}", "--json")
        body = json.loads(done.stdout)
        assert done.returncode == 1 and body["error"]["code"] == "REFUSED", (url, body)
        assert "server of this llmlab mesh" in body["error"]["message"], (url, body)
        assert body.get("result") is None


async def test_http_fetch_in_the_pwa_never_reads_the_bridge(browser: Browser, mesh: dict[str, Any]) -> None:
    context, page, node_id = await open_mobile(browser, mesh)
    try:
        await eventually(lambda: node_id in peers_of(mesh["tools"]), 15, "bt to learn the mobile node")
        done = await asyncio.to_thread(cli, mesh, "tool", "http_fetch", "--arg", f"url={mesh['url']}/api/pairing",
                                       "--json")
        body = json.loads(done.stdout)
        assert done.returncode == 1 and body["error"]["code"] == "REFUSED" and "llmlab mesh" in body["error"]["message"]
        # The page's own check, for a task that reached it anyway: its origin is the bridge.
        refused = await page.evaluate("""() => window.llmlabWorker.tools.http_fetch.run({url: location.origin +
            '/api/pairing'}).then(() => 'fetched', e => e.code + ': ' + e.message)""")
        assert refused.startswith("REFUSED: ") and "bridge of this llmlab mesh" in refused
        assert await page.evaluate("window.llmlabWorker.tasksDone") == 0
    finally:
        await context.close()


async def test_dashboard_behind_a_proxy_host_works_with_a_one_time_link(browser: Browser,
                                                                       mesh: dict[str, Any]) -> None:
    """A non-loopback Host (a reverse proxy's) gets no data until the link gives the browser a session."""
    port = mesh["url"].rsplit(":", 1)[1]
    proxied = f"http://{PROXIED}:{port}"
    desk = await browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        page = await desk.new_page()
        await page.goto(f"{proxied}/llmlab")
        await page.locator("#auth-banner:not([hidden])").wait_for(timeout=10000)
        assert await page.locator("#live").text_content() == "not allowed"

        def mint() -> str:
            request = urllib.request.Request(f"{mesh['url']}/api/dashboard-link", method="POST", data=b"",
                                             headers={"Authorization": f"Bearer {mesh['secret']}"})
            with urllib.request.urlopen(request, timeout=10) as response:
                return str(json.loads(response.read())["url"])

        link = (await asyncio.to_thread(mint)).replace(mesh["url"], proxied)
        await page.goto(link)
        assert page.url == f"{proxied}/llmlab"  # the token left the address bar
        await page.wait_for_function("() => document.querySelectorAll('#nodes tbody tr').length >= 2",
                                     timeout=10000)
        await page.locator("#qr:not([hidden])").wait_for(timeout=10000)
        assert await page.locator("#auth-banner").is_hidden()
        assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script reads the session
        cookies = await desk.cookies(proxied)
        assert len(cookies) == 1 and cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
        # The link is spent: a second browser opening it gets nothing.
        other = await browser.new_context()
        try:
            second = await other.new_page()
            reply = await second.goto(link)
            assert reply is not None and reply.status == 403 and await other.cookies(proxied) == []
        finally:
            await other.close()
    finally:
        await desk.close()
