"""The ``browser`` tool: open a URL in a real headless Chromium, return its text, links, a screenshot.

One Chromium per node (launched on first use through Playwright, relaunched when it
dies), a fresh browser context per call so no cookie, cache or storage leaks between
calls, and a bound on pages open at once. Every byte the pages send goes through
``EgressProxy``, which applies ``UrlGuard`` to the address it actually dials; the
URL is checked before the browser is touched and every request the page makes is
checked again by a route handler, so a refusal has a clear reason (``blocked``).
``CHROMIUM_ARGS`` holds the launch flags; docs/browser.md the limits and safety rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from llmlab_grpc.tools.base import Tool, ToolFailure
from llmlab_grpc.tools.builtin.egress_proxy import EgressProxy
from llmlab_grpc.tools.builtin.url_guard import MeshPorts, Resolver, UrlGuard, UrlRefused, parse_url

if TYPE_CHECKING:
    from llmlab_grpc.config import NodeSettings

log = logging.getLogger(__name__)

CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    # WebRTC may not send UDP around the proxy (SOCKS carries TCP only), so it cannot reach the LAN either.
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    # Chromium resolves no name itself: the egress proxy does. Playwright adds this rule for a SOCKS
    # proxy but wrapped in literal quotes, which Chromium rejects when no shell strips them (measured
    # with Chromium 156); the last occurrence of a switch wins, so this unquoted one takes effect.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)

# Limits (documented in docs/browser.md; the input schema enforces them).
DEFAULT_TEXT_CHARS = 20_000
MAX_TEXT_CHARS = 200_000
DEFAULT_LINKS = 50
MAX_LINKS = 200
LINK_TEXT_CHARS = 200
MAX_URL_CHARS = 2048
DEFAULT_TIMEOUT_MS = 15_000
MIN_TIMEOUT_MS = 1_000
MAX_TIMEOUT_MS = 45_000
EXTRACT_TIMEOUT_S = 15.0
MAX_BLOCKED = 50
VIEWPORT = {"width": 1280, "height": 800}
MAX_SCREENSHOT_WIDTH = 4_000
MAX_SCREENSHOT_HEIGHT = 8_000
MAX_CONCURRENT_PAGES = 4
MAX_SETTLE_ROUNDS = 5
SETTLE_QUIET_S = 0.1
"""After the load, a page that starts no navigation for this long is taken as settled."""
"""Documents a page may go through after its first load (meta refresh, script navigation) before we give up."""

_LINKS_JS = """(max) => {
  const out = [], seen = new Set();
  for (const a of document.querySelectorAll('a[href]')) {
    const href = a.href;
    if (typeof href !== 'string' || !/^https?:/i.test(href) || seen.has(href)) continue;
    seen.add(href);
    const text = a.innerText || a.getAttribute('aria-label') || a.title || '';
    out.push({text: String(text), href});
    if (out.length >= max) break;
  }
  return out;
}"""
_TEXT_JS = "() => document.body ? document.body.innerText : ''"
_SIZE_JS = """() => {
  const d = document.documentElement, b = document.body;
  return [Math.max(d.scrollWidth, b ? b.scrollWidth : 0), Math.max(d.scrollHeight, b ? b.scrollHeight : 0)];
}"""


class BrowserInput(BaseModel):
    """Arguments of one ``browser`` call."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(..., min_length=1, max_length=MAX_URL_CHARS, description="http:// or https:// URL to open")
    screenshot: bool = Field(False, description="also return a PNG screenshot as an attachment")
    full_page: bool = Field(False, description=f"screenshot the whole page (clipped to {MAX_SCREENSHOT_WIDTH}x"
                                               f"{MAX_SCREENSHOT_HEIGHT} px) instead of the 1280x800 viewport")
    max_text_chars: int = Field(DEFAULT_TEXT_CHARS, ge=0, le=MAX_TEXT_CHARS,
                                description="visible text beyond this many characters is cut off")
    max_links: int = Field(DEFAULT_LINKS, ge=0, le=MAX_LINKS, description="at most this many links")
    wait_until: Literal["load", "domcontentloaded", "networkidle"] = Field(
        "load", description="page event that ends loading")
    timeout_ms: int = Field(DEFAULT_TIMEOUT_MS, ge=MIN_TIMEOUT_MS, le=MAX_TIMEOUT_MS,
                            description="time allowed to load the page, milliseconds")


class Link(BaseModel):
    text: str = Field(description="the link's visible text, whitespace-normalised")
    href: str = Field(description="absolute http(s) URL")


class BlockedRequest(BaseModel):
    url: str
    reason: str


class BrowserOutput(BaseModel):
    """What the page showed, after redirects."""

    url: str = Field(description="final URL after redirects")
    status: int = Field(description="HTTP status of the main document (0 when there was none)")
    title: str
    text: str = Field(description="visible text of the body, whitespace-normalised, cut at max_text_chars")
    truncated: bool = Field(description="text was cut at max_text_chars")
    text_chars: int = Field(description="length of the whole visible text before cutting")
    links: list[Link] = Field(description="distinct http(s) links, absolute, at most max_links")
    blocked: list[BlockedRequest] = Field(description=f"requests the page made that were refused (at most "
                                                      f"{MAX_BLOCKED})")
    screenshot_bytes: int = Field(0, description="size of the PNG attachment, 0 without a screenshot")


def normalise_whitespace(text: str) -> str:
    """Runs of spaces and tabs become one space, lines are trimmed, blank lines dropped."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def chromium_available(path: str = CHROMIUM_PATH) -> bool:
    return os.access(path, os.X_OK)


class _Navigations:
    """Main-frame navigations of one page: started (new requests, not redirect hops) and ended.

    ``page.goto`` returns at the first document's load; a meta refresh or a script may
    start another navigation right after it. ``settle`` waits until no navigation is in
    flight, the current document reached the wanted load state, and nothing new started
    for ``SETTLE_QUIET_S``, bounded by the page's time limit (reading then is still
    guarded by ``_extract_settled``).
    """

    def __init__(self, page: Any) -> None:
        self.page = page
        self.started = 0
        self.ended = 0
        page.on("request", self._request)
        page.on("requestfailed", self._failed)
        page.on("framenavigated", self._committed)

    def _main(self, request: Any) -> bool:
        try:
            return bool(request.is_navigation_request() and request.frame == self.page.main_frame)
        except Exception:  # a frame that is already gone
            return False

    def _request(self, request: Any) -> None:
        if request.redirected_from is None and self._main(request):
            self.started += 1

    def _failed(self, request: Any) -> None:
        if self._main(request):
            self.ended = min(self.started, self.ended + 1)

    def _committed(self, frame: Any) -> None:
        if frame == self.page.main_frame:
            self.ended = self.started  # what started before has committed or was superseded

    async def settle(self, wait_until: str, budget_s: float) -> None:
        from playwright.async_api import Error as PlaywrightError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        while loop.time() < deadline:
            if self.started > self.ended:
                await asyncio.sleep(0.05)
                continue
            seen = self.started
            with contextlib.suppress(PlaywrightError):
                await self.page.wait_for_load_state(wait_until, timeout=max(1.0, (deadline - loop.time()) * 1000))
            await asyncio.sleep(SETTLE_QUIET_S)
            if self.started == seen and self.started <= self.ended:
                return


def _placeholder(result: dict[str, Any]) -> bool:
    """What a page that navigated itself shows between two documents: no text, and no title or
    Chromium's "Loading <url>" stand-in. Only asked after a self-navigation (a blank page loaded
    directly is a fine answer)."""
    title = str(result.get("title", ""))
    return not result.get("text") and (not title or title.startswith(("Loading http://", "Loading https://")))


def _navigated_away(exc: Exception) -> bool:
    """Playwright's way of saying the document it was reading was replaced by a navigation."""
    text = str(exc)
    return "Execution context was destroyed" in text or "Cannot find context with specified id" in text


def _host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return ""


class BrowserTool(Tool):
    """Headless Chromium behind the URL guard. ``allow_private`` is the node's ``--allow-private-urls``."""

    name = "browser"
    description = ("Open an http(s) URL in a headless Chromium and return the final URL, HTTP status, title, "
                   "visible text, links and optionally a PNG screenshot. Private and loopback addresses are "
                   "refused unless the node allows them.")
    capabilities = ("web", "browser", "screenshot")
    input_model = BrowserInput
    output_model = BrowserOutput
    timeout_s = MAX_TIMEOUT_MS / 1000 + EXTRACT_TIMEOUT_S + 15.0  # page limits fire first, with a clearer message

    def __init__(self, allow_private: bool = False, *, resolver: Resolver | None = None,
                 max_concurrent_pages: int = MAX_CONCURRENT_PAGES, executable_path: str = CHROMIUM_PATH) -> None:
        self.guard = UrlGuard(allow_private=allow_private, resolver=resolver)
        self.executable_path = executable_path
        self.launches = 0  # how many times Chromium was started; > 1 means it was relaunched
        self._pages = asyncio.Semaphore(max_concurrent_pages)
        self._lock = asyncio.Lock()
        self._playwright: Any = None
        self._browser: Any = None
        self.proxy: EgressProxy | None = None

    @classmethod
    def from_settings(cls, settings: NodeSettings) -> BrowserTool:
        """How a node builds its browser: ``--allow-private-urls`` (``allow_private_urls``) sets the policy."""
        return cls(allow_private=bool(settings.allow_private_urls))

    def protect_mesh(self, mesh: MeshPorts) -> None:
        self.guard.mesh = mesh

    @property
    def allow_private(self) -> bool:
        return self.guard.allow_private

    async def start(self) -> None:
        """Chromium starts on first use (about 1 s), so a tools node that never browses never pays for it."""
        if not chromium_available(self.executable_path):
            log.warning("browser tool: no Chromium at %s (apt-get install chromium); calls will fail",
                        self.executable_path)

    async def close(self) -> None:
        async with self._lock:
            browser, playwright, proxy = self._browser, self._playwright, self.proxy
            self._browser = self._playwright = self.proxy = None
            if browser is not None:
                with contextlib.suppress(Exception):
                    await browser.close()
            if playwright is not None:
                with contextlib.suppress(Exception):
                    await playwright.stop()
            if proxy is not None:
                await proxy.close()

    async def _ensure_browser(self) -> Any:
        """The shared Chromium, launched now if it never was or if it died or was closed."""
        async with self._lock:
            if self._browser is not None and self._browser.is_connected():
                return self._browser
            if not chromium_available(self.executable_path):
                raise ToolFailure("UNAVAILABLE", f"no Chromium at {self.executable_path}; "
                                                 "install it with: apt-get install chromium")
            if self._browser is not None:
                log.warning("browser tool: Chromium disconnected; relaunching")
                with contextlib.suppress(Exception):
                    await self._browser.close()
                self._browser = None
            if self.proxy is None:
                proxy = EgressProxy(self.guard)
                await proxy.start()
                self.proxy = proxy
            try:
                self._browser = await self._launch()
            except Exception:
                # The Playwright driver itself may be gone: start a new one and try once more.
                with contextlib.suppress(Exception):
                    await self._playwright.stop()
                self._playwright = None
                self._browser = await self._launch()
            self.launches += 1
            return self._browser

    async def _launch(self) -> Any:
        from playwright.async_api import async_playwright

        if self._playwright is None:
            self._playwright = await async_playwright().start()
        assert self.proxy is not None
        return await self._playwright.chromium.launch(
            executable_path=self.executable_path, args=list(CHROMIUM_ARGS), headless=True,
            proxy={"server": self.proxy.browser_proxy_url})

    async def _new_context(self) -> Any:
        for attempt in (1, 2):
            browser = await self._ensure_browser()
            assert self.proxy is not None
            try:
                return await browser.new_context(
                    proxy={"server": self.proxy.page_proxy_url}, accept_downloads=False, service_workers="block",
                    viewport=VIEWPORT)
            except Exception:
                if attempt == 2 or browser.is_connected():
                    raise
        raise AssertionError("unreachable")

    async def execute(self, **kwargs: Any) -> dict[str, Any]:
        params = BrowserInput.model_validate(kwargs)
        target, _ = await self.guard.check_url(params.url)  # refused here: nothing was sent anywhere
        async with self._pages:
            context = await self._new_context()
            try:
                return await self._visit(context, params, (target.host, target.port))
            finally:
                with contextlib.suppress(Exception):
                    await context.close()

    async def _visit(self, context: Any, params: BrowserInput, checked: tuple[str, int]) -> dict[str, Any]:
        from playwright.async_api import Error as PlaywrightError
        from playwright.async_api import TimeoutError as PlaywrightTimeoutError

        blocked: list[BlockedRequest] = []
        verdicts: dict[tuple[str, int], str | None] = {checked: None}
        proxy = self.proxy
        assert proxy is not None

        def block(url: str, reason: str) -> None:
            if len(blocked) < MAX_BLOCKED and not any(b.url == url for b in blocked):
                blocked.append(BlockedRequest(url=url[:MAX_URL_CHARS], reason=reason))

        async def on_route(route: Any) -> None:
            """Every request the page makes, checked before Chromium sends it (the proxy checks again)."""
            url = route.request.url
            try:
                target = parse_url(url)
                key = (target.host, target.port)
                if key not in verdicts:
                    try:
                        await self.guard.resolve(*key)
                        verdicts[key] = None
                    except UrlRefused as exc:
                        verdicts[key] = exc.message
                    except ToolFailure:
                        verdicts[key] = None  # unresolvable: let it fail as a network error
                reason = verdicts[key]
            except UrlRefused as exc:
                reason = exc.message
            with contextlib.suppress(PlaywrightError):
                if reason is None:
                    await route.continue_()
                else:
                    block(url, reason)
                    await route.abort("blockedbyclient")

        def on_request_failed(request: Any) -> None:
            """A connection the proxy refused (a redirect hop, a name that re-resolved elsewhere)."""
            reason = proxy.refusal_for(_host_of(request.url))
            if reason is not None and "SOCKS" in (request.failure or ""):
                block(request.url, reason)

        async def on_dialog(dialog: Any) -> None:
            with contextlib.suppress(PlaywrightError):
                await dialog.dismiss()

        async def on_popup(popup: Any) -> None:
            with contextlib.suppress(PlaywrightError):  # popups are not followed
                await popup.close()

        await context.route("**/*", on_route)
        page = await context.new_page()
        navigations = _Navigations(page)
        page.on("requestfailed", on_request_failed)
        page.on("dialog", on_dialog)
        context.on("page", on_popup)
        page.set_default_timeout(params.timeout_ms)
        try:
            response = await page.goto(params.url, wait_until=params.wait_until, timeout=params.timeout_ms)
        except PlaywrightTimeoutError as exc:
            raise ToolFailure("TIMEOUT", f"{params.url} did not reach '{params.wait_until}' within "
                                         f"{params.timeout_ms} ms") from exc
        except PlaywrightError as exc:
            raise self._navigation_failure(params.url, exc, blocked) from exc
        documents = [response]

        def on_response(reply: Any) -> None:
            """The main frame's latest document: after a meta refresh or a script navigation, its status counts."""
            with contextlib.suppress(PlaywrightError):
                if reply.frame == page.main_frame and reply.request.is_navigation_request():
                    documents.append(reply)

        page.on("response", on_response)
        result = await self._extract_settled(page, params, navigations)
        png = result.pop("_png", None)
        final = documents[-1]
        output = BrowserOutput(url=page.url, status=final.status if final is not None else 0,
                               blocked=blocked, screenshot_bytes=len(png) if png else 0, **result)
        data = output.model_dump()
        if png:
            data["_attachments"] = [("screenshot.png", "image/png", png)]
        return data

    async def _extract_settled(self, page: Any, params: BrowserInput, navigations: _Navigations) -> dict[str, Any]:
        """Extract once the page stops navigating itself.

        A page may navigate after its ``load`` (a meta refresh, ``location = ...`` in a
        script); reading it then fails with "Execution context was destroyed" or reads
        Chromium's placeholder ("Loading URL"). So: let the navigations settle, read, and
        read again after settling whenever a navigation started meanwhile or the read
        was cut off by one, up to ``MAX_SETTLE_ROUNDS`` documents within the call's time
        limit, so a page that never stops (a refresh to itself every 0 s) ends with a
        clear error.
        """
        from playwright.async_api import Error as PlaywrightError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + params.timeout_ms / 1000  # one budget for all rounds
        result: dict[str, Any] | None
        for round_ in range(1, MAX_SETTLE_ROUNDS + 1):
            await navigations.settle(params.wait_until, max(0.0, deadline - loop.time()))
            seen = navigations.started
            try:
                result = await asyncio.wait_for(self._extract(page, params), EXTRACT_TIMEOUT_S)
                # A navigation that began after settle() returned may have left us reading a
                # document still parsing, or Chromium's "Loading URL" placeholder (no text): not
                # a stable page either, so read again.
                if await page.evaluate("document.readyState") == "loading" or (
                        navigations.started > 1 and _placeholder(result)):
                    result = None
            except TimeoutError as exc:
                raise ToolFailure("TIMEOUT", f"{page.url} loaded but did not answer within {EXTRACT_TIMEOUT_S:g} s "
                                             "(a script may be hogging the page)") from exc
            except PlaywrightError as exc:
                if not _navigated_away(exc):
                    raise
                result = None
            if result is not None and navigations.started == seen:
                return result
            if round_ == MAX_SETTLE_ROUNDS:
                raise ToolFailure("FAILED", f"{page.url} kept navigating (more than {MAX_SETTLE_ROUNDS} "
                                            "documents in a row); nothing stable to read")
        raise AssertionError("unreachable")  # pragma: no cover

    async def _extract(self, page: Any, params: BrowserInput) -> dict[str, Any]:
        title = await page.title()
        text = normalise_whitespace(str(await page.evaluate(_TEXT_JS) or ""))
        raw_links = await page.evaluate(_LINKS_JS, params.max_links) if params.max_links else []
        links: list[Link] = []
        for item in raw_links if isinstance(raw_links, list) else []:
            # Page scripts can tamper with the DOM API: trust nothing that comes back.
            if isinstance(item, dict) and isinstance(item.get("href"), str) and len(links) < params.max_links:
                href = item["href"][:MAX_URL_CHARS]
                if href.lower().startswith(("http://", "https://")):
                    label = normalise_whitespace(str(item.get("text", ""))).replace("\n", " ")[:LINK_TEXT_CHARS]
                    links.append(Link(text=label, href=href))
        result: dict[str, Any] = {
            "title": str(title)[:1000], "text": text[:params.max_text_chars],
            "truncated": len(text) > params.max_text_chars, "text_chars": len(text), "links": links,
        }
        if params.screenshot:
            options: dict[str, Any] = {"type": "png", "full_page": params.full_page}
            if params.full_page:
                width, height = await page.evaluate(_SIZE_JS)
                options["clip"] = {"x": 0, "y": 0, "width": max(1, min(int(width), MAX_SCREENSHOT_WIDTH)),
                                   "height": max(1, min(int(height), MAX_SCREENSHOT_HEIGHT))}
            result["_png"] = await page.screenshot(**options)
        return result

    def _navigation_failure(self, url: str, exc: Exception, blocked: list[BlockedRequest]) -> ToolFailure:
        """Turn Chromium's ``net::ERR_...`` into a REFUSED with the guard's reason, or a FAILED."""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "ERR_SOCKS_CONNECTION_FAILED" in first or "ERR_BLOCKED_BY_CLIENT" in first:
            if blocked:
                return UrlRefused(f"{blocked[-1].reason} (while loading {url})")
            reason = self.proxy.refusal_for(_host_of(url)) if self.proxy is not None else None
            if reason is not None:
                return UrlRefused(reason)
            return ToolFailure("FAILED", f"could not connect to {_host_of(url) or url}")
        if "Download is starting" in first:
            return UrlRefused(f"refused: {url} is a file download; downloads are not allowed")
        return ToolFailure("FAILED", f"could not open {url}: {first.removeprefix('Page.goto: ')}")
