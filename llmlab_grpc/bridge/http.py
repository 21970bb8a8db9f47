"""The node's HTTP side: one Starlette app on one uvicorn server inside the node's event loop.

Every HTTP feature shares this app and port: the bridge adds the PWA, the dashboard,
``/api/*`` and ``/ws/task``; the OpenAI-compatible API adds ``/v1/*`` with
``HttpServer.add_routes`` (before or after start). Static files are a catch-all mount
kept last, so routes added later still win over it.

uvicorn normally installs its own SIGINT/SIGTERM handlers; here the node owns the
signals (it must leave the mesh politely), so the embedded server never touches them.
The listening socket is bound here, not by uvicorn, so a port in use is a clear
``OSError`` at start instead of uvicorn's ``sys.exit``. Connections are served by
``http_guard.GuardedH11Protocol``: header and idle timeouts and a connection cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmlab_grpc.bridge.http_guard import guarded_protocol
from llmlab_grpc.mesh.net import WILDCARDS, advertised_host

log = logging.getLogger(__name__)

ACCEPT_BACKLOG = 64
"""Listen queue, and the most connections accepted in one event-loop iteration."""

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss: http: https:; manifest-src 'self'; worker-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""HTML pages run only our own files; ``connect-src`` is open because ``http_fetch`` fetches any URL."""


class SecurityHeaders:
    """Adds nosniff, no framing, no referrer to every response, and the CSP to HTML pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                         (b"referrer-policy", b"no-referrer")]
                content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if content_type.startswith(b"text/html"):
                    extra.append((b"content-security-policy", CSP.encode()))
                headers += [(k, v) for k, v in extra if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug answers JSON (in OpenAI's error shape, which the dashboard reads too), never a plain-text 500.

    Starlette re-raises the exception afterwards, so uvicorn still logs it with its traceback.
    """
    return JSONResponse({"error": {"message": f"internal error ({type(exc).__name__}); the node's log has the "
                                              "details", "type": "server_error", "param": None,
                                   "code": "internal_error"}}, status_code=500)


@dataclass(frozen=True)
class HttpLimits:
    """Connection limits of the HTTP server (``--http-header-timeout`` and friends; docs/security.md)."""

    header_timeout_s: float = 10.0
    idle_timeout_s: float = 15.0
    max_connections: int = 512


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without signal handling: the node process owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP,
    # and without it every keep-alive response waits ~40 ms (Nagle against the client's delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise OSError(f"could not bind the HTTP server to {host}:{port}: {exc.strerror}") from exc
    sock.listen(ACCEPT_BACKLOG)
    sock.setblocking(False)
    return sock


class HttpServer:
    """Owns the ASGI app and its uvicorn server; ``await start()`` returns the base URL."""

    def __init__(self, host: str, port: int, advertise_host: str = "", routes: Sequence[BaseRoute] = (),
                 ws_max_size: int = 1024 * 1024, limits: HttpLimits | None = None) -> None:
        self.host = host
        self.port = port
        self.advertise_host = advertise_host
        self.ws_max_size = ws_max_size
        self.limits = limits or HttpLimits()
        self.app = Starlette(routes=list(routes), exception_handlers={Exception: _internal_error})
        self.url = ""
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def routes(self) -> list[BaseRoute]:
        return self.app.router.routes

    def add_routes(self, routes: Sequence[BaseRoute]) -> None:
        """Add routes that win over the static catch-all; safe before and after ``start``."""
        at = next((i for i, r in enumerate(self.routes) if isinstance(r, Mount) and r.path == ""), len(self.routes))
        self.routes[at:at] = list(routes)

    async def start(self) -> str:
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        limits = self.limits
        config = uvicorn.Config(
            SecurityHeaders(self.app), ws="websockets-sansio", lifespan="off", log_config=None,
            log_level="warning", access_log=False, proxy_headers=False, server_header=False,
            ws_max_size=self.ws_max_size, timeout_graceful_shutdown=2,
            http=guarded_protocol(limits.header_timeout_s, limits.idle_timeout_s, limits.max_connections),
            timeout_keep_alive=limits.idle_timeout_s,  # type: ignore[arg-type]  # uvicorn says int; a float works (call_later)
            # asyncio accepts up to `backlog` connections in one loop iteration: uvicorn's 2048 let a
            # connection flood stall the loop (and every gRPC call of the node) for a third of a second.
            backlog=ACCEPT_BACKLOG,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http-server")
        for _ in range(200):  # bounded: 10 s
            if self._server.started or self._task.done():
                break
            await asyncio.sleep(0.05)
        if not self._server.started:
            if self._task.done() and self._task.exception() is not None:
                raise OSError(f"the HTTP server failed to start: {self._task.exception()}")
            raise OSError("the HTTP server did not start within 10 s")
        host = advertised_host(self.host, self.advertise_host if self.host in WILDCARDS else "")
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self.url = f"http://{host}:{self.port}"
        return self.url

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=5.0)
        except (TimeoutError, Exception):
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
