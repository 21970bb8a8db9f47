"""The browser tool against real Chromium (Playwright, /usr/bin/chromium) and pages on 127.0.0.1.

Chromium starts once for the module. Every host name resolves through ``FakeDns``
(``site.test`` is 127.0.0.1, ``meta.test`` the cloud metadata address, ...), so no DNS
query leaves the machine; addresses that must be refused are refused before any
connection (the egress proxy's log shows what was dialled, and the module checks at
the end that it was only ever loopback).
"""

from __future__ import annotations

import asyncio
import http.server
import os
import signal
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from llmlab_grpc.tools.base import InvalidArguments
from llmlab_grpc.tools.builtin.browser import MAX_TEXT_CHARS, BrowserTool, chromium_available
from tests.dns_support import FakeDns

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="needs Debian's Chromium at /usr/bin/chromium"),
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RELEASE_SLOW = threading.Event()


def _page(title: str, body: str) -> bytes:
    return f"<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>".encode()


class Pages(http.server.BaseHTTPRequestHandler):
    """The test site. Paths are the cases; every response is complete and small."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, _page("llmlab test page", """
                <h1>Hello   from   the
                   test page</h1>
                <p>First\tparagraph,   with    spaces.</p>
                <div style="display:none">hidden words never shown</div>
                <a href="/about">About   us</a>
                <a href="/about">About again</a>
                <a href="https://example.org/docs">Docs</a>
                <a href="javascript:void(0)">Script link</a>
                <a href="mailto:someone@example.org">Mail</a>"""))
        elif path == "/long":
            words = " ".join(f"word{i}" for i in range(3000))
            self._send(200, _page("long page", f"<p>{words}</p><div style='height:3000px'>tall</div>"))
        elif path == "/redirect":
            self._send(302, b"", [("Location", "/final")])
        elif path == "/final":
            self._send(200, _page("final page", "<p>You were redirected here.</p>"))
        elif path == "/missing":
            self._send(404, _page("not found", "<p>nothing here</p>"))
        elif path == "/slow":
            RELEASE_SLOW.wait(10)
            self._send(200, _page("slow page", "<p>late</p>"))
        elif path == "/subresources":
            self._send(200, _page("sub-resources", f"""
                <p>page with forbidden parts</p>
                <img src="http://meta.test:{port}/latest/meta-data/">
                <img src="http://metadata.google.internal/computeMetadata/v1/">
                <img src="/pixel.png">
                <script>fetch("http://meta.test:{port}/from-script").catch(() => {{}});</script>"""))
        elif path == "/pixel.png":
            self._send(200, b"", [("Content-Type", "image/png")])
        elif path == "/redirect-to-metadata":
            self._send(302, b"", [("Location", f"http://meta.test:{port}/latest/meta-data/")])
        elif path == "/dialogs":
            self._send(200, _page("dialogs", "<p>after dialogs</p>"
                                  "<script>alert('hi'); confirm('sure?'); prompt('name?');</script>"))
        elif path == "/download":
            self._send(200, b"binary payload", [("Content-Type", "application/octet-stream"),
                                                 ("Content-Disposition", 'attachment; filename="x.bin"')])
        elif path == "/meta-refresh":
            self._send(200, _page("refreshing", '<meta http-equiv="refresh" content="0;url=/final"><p>wait</p>'))
        elif path == "/script-navigates":
            self._send(200, _page("navigating", "<p>moving on</p><script>addEventListener('load', () => "
                                  "setTimeout(() => { location.href = '/final'; }, 30));</script>"))
        elif path == "/refresh-forever":
            self._send(200, _page("again", f'<meta http-equiv="refresh" content="0"><p>{os.urandom(4).hex()}</p>'))
        elif path == "/popup":
            self._send(200, _page("opener", "<p>opener</p><script>window.open('/final');</script>"))
        else:
            self._send(404, b"")

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        self.send_response(status)
        names = {name.lower() for name, _ in headers or []}
        if "content-type" not in names:
            self.send_header("Content-Type", "text/html; charset=utf-8")
        for name, value in headers or []:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def site() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    server.daemon_threads = True
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    RELEASE_SLOW.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def dns() -> FakeDns:
    return FakeDns({
        "site.test": ["127.0.0.1"],
        "meta.test": ["169.254.169.254"],
        "lan.test": ["10.1.2.3"],
        "localhost": ["127.0.0.1"],
        "rebind.test": [["127.0.0.1"], ["169.254.169.254"]],
    })


@pytest.fixture(scope="module")
async def tool(dns: FakeDns) -> AsyncIterator[BrowserTool]:
    """The node setting the tests need for local pages: ``--allow-private-urls``. One Chromium for the module."""
    browser = BrowserTool(allow_private=True, resolver=dns)
    await browser.start()
    yield browser
    proxy = browser.proxy
    await browser.close()
    assert proxy is not None
    dialled = {e.address for e in proxy.events if e.address}
    assert dialled <= {"127.0.0.1"}, f"the browser connected beyond loopback: {dialled}"


@pytest.fixture
def strict_tool(dns: FakeDns) -> BrowserTool:
    """A node without ``--allow-private-urls``."""
    return BrowserTool(allow_private=False, resolver=dns)


def _url(site: http.server.ThreadingHTTPServer, path: str = "/", host: str = "site.test") -> str:
    return f"http://{host}:{site.server_address[1]}{path}"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    return struct.unpack(">II", data[16:24])


async def test_title_text_and_absolute_links(tool: BrowserTool, site: http.server.ThreadingHTTPServer) -> None:
    outcome = await tool.run({"url": _url(site)})
    assert outcome.ok, outcome.error
    r = outcome.result
    assert r["status"] == 200
    assert r["url"] == _url(site)
    assert r["title"] == "llmlab test page"
    assert r["text"].splitlines()[:2] == ["Hello from the test page", "First paragraph, with spaces."]
    assert "hidden words" not in r["text"]
    assert r["truncated"] is False and r["text_chars"] == len(r["text"])
    assert r["links"] == [
        {"text": "About us", "href": _url(site, "/about")},
        {"text": "Docs", "href": "https://example.org/docs"},
    ]
    assert r["blocked"] == [] and r["screenshot_bytes"] == 0
    assert outcome.attachments == []


async def test_viewport_screenshot_is_a_png(tool: BrowserTool, site: http.server.ThreadingHTTPServer) -> None:
    outcome = await tool.run({"url": _url(site), "screenshot": True})
    assert outcome.ok, outcome.error
    [(name, mime, data)] = outcome.attachments
    assert (name, mime) == ("screenshot.png", "image/png")
    assert _png_size(data) == (1280, 800)
    assert outcome.result["screenshot_bytes"] == len(data)


async def test_full_page_screenshot_is_taller_than_the_viewport(
        tool: BrowserTool, site: http.server.ThreadingHTTPServer) -> None:
    outcome = await tool.run({"url": _url(site, "/long"), "screenshot": "true", "full_page": True})
    assert outcome.ok, outcome.error
    width, height = _png_size(outcome.attachments[0][2])
    assert width == 1280 and 3000 < height <= 8000


async def test_text_is_truncated_at_the_limit(tool: BrowserTool, site: http.server.ThreadingHTTPServer) -> None:
    outcome = await tool.run({"url": _url(site, "/long"), "max_text_chars": 100, "max_links": 0})
    assert outcome.ok, outcome.error
    r = outcome.result
    assert len(r["text"]) == 100 and r["text"].startswith("word0 word1 ")
    assert r["truncated"] is True and r["text_chars"] > 100
    assert r["links"] == []


async def test_redirect_is_followed(tool: BrowserTool, site: http.server.ThreadingHTTPServer) -> None:
    outcome = await tool.run({"url": _url(site, "/redirect")})
    assert outcome.ok, outcome.error
    assert outcome.result["url"] == _url(site, "/final")
    assert outcome.result["status"] == 200
    assert outcome.result["title"] == "final page"


async def test_http_error_status_is_a_result(tool: BrowserTool, site: http.server.ThreadingHTTPServer) -> None:
    outcome = await tool.run({"url": _url(site, "/missing"), "wait_until": "domcontentloaded"})
    assert outcome.ok, outcome.error
    assert (outcome.result["status"], outcome.result["title"]) == (404, "not found")


async def test_page_timeout(tool: BrowserTool, site: http.server.ThreadingHTTPServer) -> None:
    outcome = await tool.run({"url": _url(site, "/slow"), "timeout_ms": 1000})
    assert outcome.error is not None
    assert outcome.error.code == "TIMEOUT"
    assert "did not reach 'load' within 1000 ms" in outcome.error.message


async def test_dialogs_are_dismissed(tool: BrowserTool, site: http.server.ThreadingHTTPServer) -> None:
    outcome = await tool.run({"url": _url(site, "/dialogs")})
    assert outcome.ok, outcome.error
    assert outcome.result["text"] == "after dialogs"


async def test_download_is_refused(tool: BrowserTool, site: http.server.ThreadingHTTPServer) -> None:
    outcome = await tool.run({"url": _url(site, "/download")})
    assert outcome.error is not None and outcome.error.code == "REFUSED"
    assert "download" in outcome.error.message


@pytest.mark.parametrize("path", ["/meta-refresh", "/script-navigates"])
async def test_a_page_that_navigates_itself_is_read_once_it_settles(
        tool: BrowserTool, site: http.server.ThreadingHTTPServer, path: str) -> None:
    """Reading a page while it navigates failed with "Execution context was destroyed" (issue 16)."""
    for _ in range(3):  # the race is timing-dependent: a few rounds make a regression show
        outcome = await tool.run({"url": _url(site, path)})
        assert outcome.ok, outcome.error
        assert outcome.result["url"].endswith("/final") and outcome.result["title"] == "final page"
        assert outcome.result["text"] == "You were redirected here." and outcome.result["status"] == 200


async def test_a_page_that_never_stops_navigating_is_a_clear_failure(
        tool: BrowserTool, site: http.server.ThreadingHTTPServer) -> None:
    outcome = await tool.run({"url": _url(site, "/refresh-forever"), "timeout_ms": 5000})
    if outcome.ok:  # Chromium may read one of the documents between two refreshes: that is a fine answer
        assert outcome.result["title"] == "again"
    else:
        assert outcome.error is not None and outcome.error.code in {"FAILED", "TIMEOUT"}
        assert "Execution context" not in outcome.error.message


async def test_popups_are_not_followed(tool: BrowserTool, site: http.server.ThreadingHTTPServer) -> None:
    outcome = await tool.run({"url": _url(site, "/popup")})
    assert outcome.ok, outcome.error
    assert outcome.result["title"] == "opener"


async def test_page_cannot_reach_a_refused_address(
        tool: BrowserTool, site: http.server.ThreadingHTTPServer, dns: FakeDns) -> None:
    """Images and fetch() to the metadata address are aborted by the route check; nothing is dialled."""
    assert tool.proxy is not None
    proxied_before = sum(1 for e in tool.proxy.events if e.host in ("meta.test", "metadata.google.internal"))
    outcome = await tool.run({"url": _url(site, "/subresources"), "wait_until": "networkidle"})
    assert outcome.ok, outcome.error
    blocked = {b["url"]: b["reason"] for b in outcome.result["blocked"]}
    port = site.server_address[1]
    assert "169.254.169.254, a cloud metadata address" in blocked[f"http://meta.test:{port}/latest/meta-data/"]
    assert f"http://meta.test:{port}/from-script" in blocked
    assert "cloud metadata host" in blocked["http://metadata.google.internal/computeMetadata/v1/"]
    assert "metadata.google.internal" not in dns.calls  # refused by name, never looked up
    # aborted by the route handler: never even reached the proxy
    assert sum(1 for e in tool.proxy.events if e.host in ("meta.test", "metadata.google.internal")) == proxied_before


async def test_redirect_to_a_refused_address(tool: BrowserTool, site: http.server.ThreadingHTTPServer) -> None:
    """Redirect hops are not seen by the route handler; the egress proxy refuses them instead."""
    outcome = await tool.run({"url": _url(site, "/redirect-to-metadata")})
    assert outcome.error is not None and outcome.error.code == "REFUSED"
    assert "meta.test resolves to 169.254.169.254, a cloud metadata address" in outcome.error.message
    assert tool.proxy is not None
    refused = [e for e in tool.proxy.events if e.host == "meta.test"]
    assert refused and all(e.address == "" for e in refused)


async def test_dns_rebinding_is_caught_at_connection(
        tool: BrowserTool, site: http.server.ThreadingHTTPServer, dns: FakeDns) -> None:
    """rebind.test answers 127.0.0.1 to the URL check and the metadata address when Chromium connects."""
    outcome = await tool.run({"url": _url(site, "/", host="rebind.test")})
    assert outcome.error is not None and outcome.error.code == "REFUSED", outcome
    assert "rebind.test resolves to 169.254.169.254" in outcome.error.message
    assert dns.calls.count("rebind.test") >= 2


@pytest.mark.parametrize(("url", "words"), [
    ("file:///etc/passwd", "file: URLs are not allowed"),
    ("javascript:alert(1)", "javascript: URLs are not allowed"),
    ("ftp://127.0.0.1/", "ftp: URLs are not allowed"),
    ("data:text/html,<title>x</title>", "data: URLs are not allowed"),
    ("http://10.1.2.3/", "refused: 10.1.2.3 is a private address; start the node with --allow-private-urls"),
    ("http://lan.test/", "lan.test resolves to 10.1.2.3, a private address"),
    ("http://127.0.0.1:9/", "127.0.0.1 is a loopback address; start the node with --allow-private-urls"),
    ("http://localhost:9/", "localhost resolves to 127.0.0.1, a loopback address"),
    ("http://[::ffff:192.168.0.1]/", "is a private address"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata address"),
])
async def test_refused_before_any_connection(strict_tool: BrowserTool, url: str, words: str) -> None:
    outcome = await strict_tool.run({"url": url})
    assert outcome.error is not None and outcome.error.code == "REFUSED"
    assert words in outcome.error.message
    # Refused by the guard alone: no browser, no proxy, so not one packet was sent.
    assert strict_tool.launches == 0 and strict_tool.proxy is None


async def test_loopback_page_refused_without_the_flag(
        strict_tool: BrowserTool, site: http.server.ThreadingHTTPServer) -> None:
    before = len(site.paths)  # type: ignore[attr-defined]
    outcome = await strict_tool.run({"url": _url(site, "/", host="127.0.0.1")})
    assert outcome.error is not None and outcome.error.code == "REFUSED"
    assert len(site.paths) == before  # type: ignore[attr-defined]


def test_built_from_node_settings() -> None:
    from llmlab_grpc.config import NodeSettings

    assert BrowserTool.from_settings(NodeSettings(allow_private_urls=True)).allow_private is True
    assert BrowserTool.from_settings(NodeSettings()).allow_private is False
    assert BrowserTool().allow_private is False


@pytest.mark.parametrize("arguments", [
    {"url": "http://site.test/", "max_text_chars": MAX_TEXT_CHARS + 1},
    {"url": "http://site.test/", "timeout_ms": 60_000},
    {"url": "http://site.test/", "wait_until": "commit-ish"},
    {"url": "http://site.test/", "cookies": "yes"},
    {"url": ""},
    {},
])
async def test_bad_arguments_are_invalid(strict_tool: BrowserTool, arguments: dict[str, object]) -> None:
    with pytest.raises(InvalidArguments):
        await strict_tool.run(arguments)


async def test_many_calls_share_one_browser(tool: BrowserTool, site: http.server.ThreadingHTTPServer) -> None:
    launches = tool.launches
    outcomes = await asyncio.gather(*(tool.run({"url": _url(site, f"/?n={i}")}) for i in range(10)))
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert {o.result["title"] for o in outcomes} == {"llmlab test page"}
    assert tool.launches == launches == 1


async def test_relaunch_after_the_browser_is_closed(tool: BrowserTool, site: http.server.ThreadingHTTPServer) -> None:
    assert (await tool.run({"url": _url(site)})).ok
    launches = tool.launches
    await tool._browser.close()
    outcome = await tool.run({"url": _url(site, "/final")})
    assert outcome.ok, outcome.error
    assert outcome.result["title"] == "final page"
    assert tool.launches == launches + 1


def _chromium_main_pids() -> list[int]:
    """PIDs of Chromium browser processes descended from this test process (we started them)."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])

    def ours(pid: int) -> bool:
        for _ in range(64):
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
            if pid <= 1:
                return False
        return False

    return [pid for pid, cmd in commands.items()
            if "chromium" in cmd.split(" ", 1)[0] and "--type=" not in cmd and ours(pid)]


async def test_relaunch_after_the_browser_crashes(tool: BrowserTool, site: http.server.ThreadingHTTPServer) -> None:
    assert (await tool.run({"url": _url(site)})).ok
    launches = tool.launches
    pids = _chromium_main_pids()
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    for _ in range(100):
        if not tool._browser.is_connected():
            break
        await asyncio.sleep(0.05)
    outcome = await tool.run({"url": _url(site, "/final")})
    assert outcome.ok, outcome.error
    assert tool.launches == launches + 1


async def test_chromium_resolves_no_names_itself(tool: BrowserTool, site: http.server.ThreadingHTTPServer) -> None:
    """Only the egress proxy resolves names: even a context dialling directly cannot use DNS or /etc/hosts."""
    import socket

    host = socket.gethostname()
    try:
        local = socket.gethostbyname(host)  # /etc/hosts or the local resolver; never a packet beyond loopback
    except OSError:
        local = ""
    if not local.startswith("127."):
        pytest.skip(f"{host} does not resolve to a loopback address here")
    await tool._ensure_browser()
    context = await tool._browser.new_context(proxy={"server": "http://127.0.0.1:9", "bypass": "*"})
    try:
        page = await context.new_page()
        with pytest.raises(Exception, match="ERR_NAME_NOT_RESOLVED"):
            await page.goto(f"http://{host}:{site.server_address[1]}/", timeout=10_000)
    finally:
        await context.close()
