"""uvicorn's h11 protocol with the limits it lacks: a header deadline, a body idle timeout, a connection cap.

uvicorn closes a keep-alive connection that stays quiet *after* a response, and that is
all: a socket that connects and sends nothing, or sends its request headers one byte
at a time (slowloris), or a body one byte a minute, is kept forever, and there is no
limit on how many such sockets a client may hold. Measured before this module: 200
slowloris sockets stayed open for a minute, idle ones never closed.

``GuardedH11Protocol`` adds, per connection, one timer for whatever the server is
waiting for from the client:

* nothing received yet (a fresh connection, or between keep-alive requests): the idle
  timeout (``idle_timeout_s``, which is also uvicorn's keep-alive timeout);
* the first bytes of a request until its headers are complete: ``header_timeout_s``,
  counted from the first byte and *not* extended by later bytes, so trickling headers
  buys nothing;
* a request body: ``idle_timeout_s`` between two pieces of it.

While the application works on a request no timer runs (a generation may take minutes;
``--api-timeout`` bounds that). A connection beyond ``max_connections`` (HTTP and
WebSocket together) is closed as soon as it is accepted, before a byte is read.
When a timer fires the socket is closed: there is no request yet to answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0
"""At most one warning per this many seconds about refused connections (a flood must not flood the log)."""


class GuardedH11Protocol(H11Protocol):
    """One HTTP connection; the class attributes are set by ``guarded_protocol``."""

    header_timeout_s: float = 10.0
    idle_timeout_s: float = 15.0
    max_connections: int = 512
    _last_warning = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_for = ""

    # -- timers -----------------------------------------------------------------------
    def _arm(self, what: str, seconds: float) -> None:
        self._disarm()
        self._waiting_for = what
        self._timer = self.loop.call_later(seconds, self._expired, what, seconds)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._waiting_for = ""

    def _expired(self, what: str, seconds: float) -> None:
        self._timer = None
        self._waiting_for = ""
        if self.transport is not None and not self.transport.is_closing():
            log.debug("closing HTTP connection from %s: no %s within %g s", self.client, what, seconds)
            self.transport.close()

    @classmethod
    def _warn(cls, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - GuardedH11Protocol._last_warning >= LOG_EVERY_S:
            GuardedH11Protocol._last_warning = now
            log.warning(message, *args)

    # -- protocol ---------------------------------------------------------------------
    # asyncio.Protocol takes any BaseTransport; uvicorn's H11Protocol narrows it to a Transport (and ignores it too).
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._warn("HTTP connection cap of %d reached: closing new connections (--http-max-connections)",
                       self.max_connections)
            transport.close()
            return
        self._arm("request", self.idle_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        between_requests = before is None or before.response_complete
        super().data_received(data)
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            self._disarm()  # closed, or upgraded to a WebSocket: the WebSocket protocol owns it now
            return
        cycle = self.cycle
        if cycle is not before and cycle is not None:
            # Headers complete: a new request is with the application.
            if cycle.more_body and not self.flow.read_paused:
                self._arm("request body", self.idle_timeout_s)
            else:
                self._disarm()
        elif between_requests:
            if self._waiting_for != "complete request headers":  # the deadline runs from the first byte
                self._arm("complete request headers", self.header_timeout_s)
        elif cycle is not None and cycle.more_body and not cycle.response_complete and not self.flow.read_paused:
            self._arm("request body", self.idle_timeout_s)
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        self._disarm()  # uvicorn's keep-alive timer (the same idle timeout) takes over
        super().on_response_complete()


def guarded_protocol(header_timeout_s: float, idle_timeout_s: float, max_connections: int) -> type[H11Protocol]:
    """A ``GuardedH11Protocol`` class with these limits, for ``uvicorn.Config(http=...)``."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {
        "header_timeout_s": header_timeout_s, "idle_timeout_s": idle_timeout_s, "max_connections": max_connections,
    })
