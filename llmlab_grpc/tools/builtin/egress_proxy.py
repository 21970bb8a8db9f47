"""A loopback SOCKS5 proxy that every Chromium connection goes through, checked by ``UrlGuard``.

Checking a URL before the browser loads it is not enough: Chromium resolves the name
again when it connects, and a hostile DNS server can answer with a public address
for the check and ``10.0.0.5`` for the connection (DNS rebinding). So the browser is
launched with this proxy as its SOCKS5 server (Playwright then also maps every name
Chromium would resolve itself to NOTFOUND, and proxies loopback too). Chromium hands
the proxy the host *name*; the proxy resolves it, checks every address with the guard
and connects only to an address it has just checked. The address Chromium's bytes
reach is therefore always one the guard allowed; a refused one is never dialled.

SOCKS5 (RFC 1928) rather than an HTTP proxy because it tunnels http, https and
WebSocket alike as plain TCP with no HTTP parsing here. Only CONNECT, no auth: the
proxy listens on 127.0.0.1 and grants nothing a local process could not do itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
from collections import OrderedDict, deque
from dataclasses import dataclass

from llmlab_grpc.tools.base import ToolFailure
from llmlab_grpc.tools.builtin.url_guard import UrlGuard, UrlRefused

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
CHUNK = 64 * 1024

# SOCKS5 reply codes (RFC 1928 §6).
SUCCEEDED, GENERAL_FAILURE, NOT_ALLOWED, HOST_UNREACHABLE, CONNECTION_REFUSED = 0, 1, 2, 4, 5
COMMAND_NOT_SUPPORTED, ADDRESS_NOT_SUPPORTED = 7, 8


@dataclass(frozen=True)
class ProxyEvent:
    """One CONNECT the proxy handled: where it was asked to go and what it did."""

    host: str
    port: int
    address: str  # the address actually dialled; "" when none was
    refused: str  # the guard's message when refused, else ""


class _SocksError(Exception):
    def __init__(self, reply: int) -> None:
        super().__init__(reply)
        self.reply = reply


BACKGROUND_REFUSAL = "refused: the browser's own background connection (updates, sign-in); pages only"


class EgressProxy:
    """Two SOCKS5 listeners on 127.0.0.1: one for pages, enforcing the guard; one refusing all.

    The browser is launched with the refusing one, so Chromium's own background
    traffic (component updates, Google sign-in: Debian's build ships API keys) never
    leaves the machine; every page context is created with the guarded one.
    """

    def __init__(self, guard: UrlGuard, history: int = 256) -> None:
        self.guard = guard
        self.events: deque[ProxyEvent] = deque(maxlen=history)
        self._refused: OrderedDict[str, str] = OrderedDict()
        self._history = history
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.page_port = 0
        self.browser_port = 0

    @property
    def page_proxy_url(self) -> str:
        """For ``browser.new_context(proxy=...)``: page traffic, checked by the guard."""
        return f"socks5://127.0.0.1:{self.page_port}"

    @property
    def browser_proxy_url(self) -> str:
        """For ``chromium.launch(proxy=...)``: the browser's own traffic, all refused."""
        return f"socks5://127.0.0.1:{self.browser_port}"

    async def start(self) -> None:
        pages = await asyncio.start_server(lambda r, w: self._handle(r, w, guarded=True), "127.0.0.1", 0)
        browser = await asyncio.start_server(lambda r, w: self._handle(r, w, guarded=False), "127.0.0.1", 0)
        self._servers = [pages, browser]
        self.page_port = pages.sockets[0].getsockname()[1]
        self.browser_port = browser.sockets[0].getsockname()[1]

    async def close(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:  # closed sockets end the pumps; let them finish rather than be cancelled
            await asyncio.wait(list(self._tasks), timeout=2.0)
        for server in servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    def refusal_for(self, host: str) -> str | None:
        """The guard's last message for ``host``, to explain a failed navigation to the user."""
        return self._refused.get(host.lower().strip("[]").rstrip("."))

    def _record(self, event: ProxyEvent) -> None:
        self.events.append(event)
        if event.refused:
            key = event.host.lower().strip("[]").rstrip(".")
            self._refused[key] = event.refused
            self._refused.move_to_end(key)
            while len(self._refused) > self._history:
                self._refused.popitem(last=False)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, guarded: bool) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                host, port = await asyncio.wait_for(self._handshake(reader, writer), HANDSHAKE_TIMEOUT_S)
                if not guarded:
                    self.events.append(ProxyEvent(host, port, "", BACKGROUND_REFUSAL))
                    raise _SocksError(NOT_ALLOWED)
                up_reader, upstream = await self._connect(host, port)
            except _SocksError as exc:
                writer.write(_reply(exc.reply))
                await writer.drain()
                return
            self._writers.add(upstream)
            writer.write(_reply(SUCCEEDED))
            await writer.drain()
            await asyncio.gather(_pump(reader, upstream, writer), _pump(up_reader, writer, upstream))
        except (TimeoutError, ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Nobody awaits a connection handler; Python 3.11's streams would log its cancellation as an error.
            pass
        finally:
            for w in (upstream, writer):
                if w is not None:
                    self._writers.discard(w)
                    w.close()
            if task is not None:
                self._tasks.discard(task)

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, int]:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if version != 5 or 0 not in methods:
            writer.write(b"\x05\xff")
            await writer.drain()
            raise ConnectionError("not a SOCKS5 client offering no-auth")
        writer.write(b"\x05\x00")
        version, command, _, atyp = await reader.readexactly(4)
        if version != 5 or command != 1:
            raise _SocksError(COMMAND_NOT_SUPPORTED)
        if atyp == 1:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif atyp == 4:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        elif atyp == 3:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode("idna")
        else:
            raise _SocksError(ADDRESS_NOT_SUPPORTED)
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        return host, port

    async def _connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Resolve and check ``host`` now, then dial only the addresses just checked."""
        try:
            addresses = await self.guard.resolve(host, port)
        except UrlRefused as exc:
            log.info("egress proxy %s", exc.message)
            self._record(ProxyEvent(host, port, "", exc.message))
            raise _SocksError(NOT_ALLOWED) from exc
        except ToolFailure as exc:
            self._record(ProxyEvent(host, port, "", ""))
            raise _SocksError(HOST_UNREACHABLE) from exc
        last: OSError | None = None
        for ip in addresses:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(str(ip), port), CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                last = exc if isinstance(exc, OSError) else OSError(str(exc))
                continue
            self._record(ProxyEvent(host, port, str(ip), ""))
            return reader, writer
        self._record(ProxyEvent(host, port, "", ""))
        raise _SocksError(CONNECTION_REFUSED if isinstance(last, ConnectionRefusedError) else HOST_UNREACHABLE)


def _reply(code: int) -> bytes:
    return bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0])


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, other: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close; on a reset, close both sides so the other pump ends too."""
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (ConnectionError, OSError):
        dst.close()
        other.close()
