"""``/ws/task``: the WebSocket endpoint mobile nodes connect to.

Checks, in order, for every connection and message:

* **Origin** (at the handshake): a browser always sends it, so it must be this bridge's
  own origin (its ``http_url``, its loopback names, its LAN addresses when bound to all
  interfaces) or one of ``bridge_allowed_origins``; anything else gets HTTP 403. A
  missing Origin means a non-browser client (no web page can omit it); such a client
  still has to present a pairing token in ``hello`` like everyone else.
* **Pairing**: the first message must be a ``hello`` with a valid token within
  ``HELLO_TIMEOUT_S``; a wrong or expired token gets ``UNAUTHENTICATED`` and the socket
  is closed (1008).
* **Size**: a message over ``bridge_max_message_bytes`` gets ``RESOURCE_EXHAUSTED``;
  one over four times that is cut off by the WebSocket layer (close 1009).
* **Rate**: a token bucket per connection (``bridge_rate_per_s``, ``bridge_rate_burst``);
  over it, ``RESOURCE_EXHAUSTED``; after ``MAX_STRIKES`` refusals within ``STRIKE_WINDOW_S``
  (accepted messages in between do not wipe them), closed (1008).
  Answers to our own task assignments are not charged.
* **Format**: malformed JSON, an unknown field or message, a binary frame: an
  ``INVALID_ARGUMENT`` error, and the socket stays usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from llmlab_grpc.bridge.hub import LinkClosed, MobileHub, MobileSession
from llmlab_grpc.bridge.protocol import (
    FROM_MOBILE,
    INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED,
    UNAUTHENTICATED,
    ProtocolError,
    decode,
    encode,
    error,
)
from llmlab_grpc.bridge.ratelimit import StrikeWindow, TokenBucket
from llmlab_grpc.proto.llmlab.v1 import bridge_pb2

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 15.0
SEND_TIMEOUT_S = 10.0
MAX_STRIKES = 50
STRIKE_WINDOW_S = 60.0


class WsLink:
    """A ``Link`` over a Starlette WebSocket: serialised sends, bounded in time."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._lock = asyncio.Lock()
        self.closed = False

    async def send(self, envelope: bridge_pb2.BridgeEnvelope) -> None:
        text = encode(envelope)
        async with self._lock:
            if self.closed:
                raise LinkClosed("the connection is closed")
            try:
                await asyncio.wait_for(self.websocket.send_text(text), SEND_TIMEOUT_S)
            except (WebSocketDisconnect, RuntimeError, OSError, TimeoutError) as exc:
                self.closed = True
                raise LinkClosed(f"{type(exc).__name__}: {exc}") from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            await self.websocket.close(code, reason)


@dataclass
class _Connection:
    """Per-socket state."""

    link: WsLink
    bucket: TokenBucket
    strikes: StrikeWindow
    session: MobileSession | None = None


class TaskSocket:
    """The ASGI WebSocket endpoint; one instance per bridge."""

    def __init__(self, hub: MobileHub, allowed_origins: Callable[[], set[str]]) -> None:
        self.hub = hub
        self.allowed_origins = allowed_origins
        settings = hub.settings
        self.max_bytes = settings.bridge_max_message_bytes
        self.rate = settings.bridge_rate_per_s
        self.burst = settings.bridge_rate_burst

    def origin_ok(self, origin: str | None) -> bool:
        return origin is None or origin.rstrip("/").lower() in self.allowed_origins()

    async def endpoint(self, websocket: WebSocket) -> None:
        """The WebSocketRoute endpoint."""
        origin = websocket.headers.get("origin")
        if not self.origin_ok(origin):
            log.warning("refused /ws/task from Origin %s", origin)
            await websocket.send_denial_response(PlainTextResponse(
                f"Origin {origin} may not use this bridge; add it with --bridge-origin", status_code=403))
            return
        await websocket.accept()
        conn = _Connection(WsLink(websocket), TokenBucket(self.rate, self.burst),
                           StrikeWindow(MAX_STRIKES, STRIKE_WINDOW_S))
        try:
            await self._serve(websocket, conn)
        except (LinkClosed, WebSocketDisconnect):
            pass
        finally:
            if conn.session is not None:
                await self.hub.drop(conn.session, "disconnected", close_code=1000)
            await conn.link.close()

    async def _serve(self, websocket: WebSocket, conn: _Connection) -> None:
        link = conn.link
        hello_by = time.monotonic() + HELLO_TIMEOUT_S
        while True:
            if conn.session is None:
                try:
                    message = await asyncio.wait_for(websocket.receive(), max(0.05, hello_by - time.monotonic()))
                except TimeoutError:
                    await link.send(error(UNAUTHENTICATED, f"no hello with a pairing token within "
                                          f"{HELLO_TIMEOUT_S:g} s"))
                    await link.close(1008, "no hello")
                    return
            else:
                message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if conn.session is not None:
                self.hub.heard(conn.session)
            try:
                text = self._text_of(message)
                if not conn.bucket.take():
                    over = conn.strikes.strike()
                    raise ProtocolError(RESOURCE_EXHAUSTED, f"rate limit: at most {self.rate:g} messages/s "
                                        f"(burst {self.burst}) per connection"
                                        + (f"; {MAX_STRIKES} refusals within {STRIKE_WINDOW_S:g} s, closing"
                                           if over else ""), close=over)
                await self._dispatch(conn, decode(text))
            except ProtocolError as exc:
                await link.send(error(exc.code, exc.message, exc.ref_id))
                if exc.close:
                    await link.close(1008, exc.code)
                    return

    def _text_of(self, message: Mapping[str, object]) -> str:
        text = message.get("text")
        if not isinstance(text, str):
            raise ProtocolError(INVALID_ARGUMENT, "binary frames are not accepted: send a BridgeEnvelope as JSON text")
        if len(text) > self.max_bytes or (len(text) * 4 > self.max_bytes and len(text.encode()) > self.max_bytes):
            raise ProtocolError(RESOURCE_EXHAUSTED, f"message of {len(text.encode())} bytes is over the "
                                f"{self.max_bytes}-byte limit")
        return text

    async def _dispatch(self, conn: _Connection, envelope: bridge_pb2.BridgeEnvelope) -> None:
        kind = envelope.WhichOneof("payload")
        ref = envelope.id
        session = conn.session
        if kind not in FROM_MOBILE:
            raise ProtocolError(INVALID_ARGUMENT, f"{kind} is sent by the bridge, never to it", ref)
        if kind == "hello":
            if session is not None:
                raise ProtocolError(INVALID_ARGUMENT, f"already paired as {session.node_id}", ref)
            conn.session = await self.hub.pair(conn.link, envelope.hello, ref)
            return
        if session is None:
            raise ProtocolError(UNAUTHENTICATED, "send hello with a pairing token first", ref)
        if kind == "heartbeat":
            self.hub.heartbeat(session, envelope.heartbeat)
        elif kind == "task_result":
            if self.hub.is_pending(session, envelope.task_result.task_id):
                conn.bucket.refund()
            self.hub.task_result(session, envelope.task_result, ref)
        elif kind == "error":
            log.info("mobile node %s reports %s: %s", session.name, envelope.error.code, envelope.error.message[:200])
