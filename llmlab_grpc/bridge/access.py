"""Who may read the bridge's status API (``/api/*``, with the pairing token) and how a browser proves it.

Three ways in, checked by ``Access.allows``:

* ``Authorization: Bearer <mesh secret>`` (scripts, and the dashboard opened as
  ``/llmlab#key=<secret>``);
* a **dashboard session**: an HttpOnly, SameSite=Strict cookie, signed with a key
  derived from the mesh secret. A browser gets one by opening a one-time link
  (``/llmlab?token=...``) that the bridge prints when it starts (``llmlab up`` relays
  it) or that ``llmlab dashboard`` asks for; the token is spent on first use and the
  address bar loses it at once (a redirect), as Jupyter does;
* **this machine**: the TCP peer is a loopback address *and* the ``Host`` header names
  a loopback host (``127.0.0.1``, ``localhost``, ``[::1]``) with this server's port
  *and* no proxy header (``Forwarded``, ``X-Forwarded-*``, ``X-Real-IP``, ``Via``) is
  present. The ``--bridge-origin`` hosts are *not* local: they only widen the
  WebSocket ``Origin`` check. A reverse proxy on the same machine connects from
  loopback, so a request that went through one must not count as local; it needs
  the secret or a session. (A proxy that rewrites ``Host`` to the upstream address
  and adds no forwarding header is indistinguishable from a local client:
  docs/bridge.md shows a configuration that forwards the headers.)

A foreign ``Host`` on a loopback connection is what a DNS-rebinding page sends, and
what a reverse proxy sends: both get 401 without the secret or a session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

LINK_TTL_S = 12 * 3600.0
"""How long an unused one-time dashboard link stays valid."""
SESSION_TTL_S = 7 * 86400.0
"""Life of a dashboard session cookie."""
MAX_LINKS = 64
"""Unused links kept at once; minting more drops the oldest."""
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "via")


def is_loopback_ip(host: str | None) -> bool:
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def loopback_host_header(value: str, port: int) -> bool:
    """``Host`` names this machine's loopback (``localhost``, 127.0.0.0/8, ``[::1]``) and our port."""
    try:
        parts = urlsplit(f"//{value}")
        given_port = parts.port
    except ValueError:
        return False
    name = (parts.hostname or "").rstrip(".").lower()
    return given_port == port and (name == "localhost" or is_loopback_ip(name))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class DashboardSessions:
    """One-time login links (kept in memory here) and the signed session cookies they turn into."""

    def __init__(self, mesh_secret: str, mesh_id: str, clock: Callable[[], float] = time.time) -> None:
        self._key = hashlib.sha256(b"llmlab-dashboard-session\x00" + mesh_secret.encode()).digest()
        self.cookie_name = f"llmlab_session_{mesh_id[:12]}"
        self._now = clock
        self._links: dict[str, float] = {}  # unused token -> expiry (unix s)

    # -- one-time links ---------------------------------------------------------------
    def mint_link(self) -> tuple[str, float]:
        """A new one-time token and its expiry."""
        now = self._now()
        self._links = {t: e for t, e in self._links.items() if e > now}
        while len(self._links) >= MAX_LINKS:
            del self._links[min(self._links, key=self._links.__getitem__)]
        token = secrets.token_urlsafe(24)
        self._links[token] = now + LINK_TTL_S
        return token, self._links[token]

    def redeem(self, token: str) -> str | None:
        """Spend ``token``; the session cookie value it buys, or None when unknown, used or expired."""
        found = ""
        for candidate in list(self._links):  # constant time per candidate, as for pairing tokens
            if hmac.compare_digest(candidate.encode(), token.encode()):
                found = candidate
        expires = self._links.pop(found, 0.0) if found else 0.0
        if expires <= self._now():
            return None
        return self.issue()

    # -- sessions ---------------------------------------------------------------------
    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest()[:24])

    def issue(self) -> str:
        body = f"{int(self._now() + SESSION_TTL_S)}.{_b64(secrets.token_bytes(12))}"
        return f"d1.{body}.{self._mac(body)}"

    def valid(self, value: str | None) -> bool:
        """Whether a cookie value is a session this mesh signed and it has not expired."""
        if not value or not value.startswith("d1.") or len(value) > 200:
            return False
        body, _, mac = value[3:].rpartition(".")
        expires = body.partition(".")[0]
        if not expires.isdigit() or int(expires) < self._now():
            return False
        return hmac.compare_digest(mac.encode(), self._mac(body).encode())

    def cookie_header(self, value: str, secure: bool) -> str:
        flags = f"; Max-Age={int(SESSION_TTL_S)}; Path=/; HttpOnly; SameSite=Strict"
        return f"{self.cookie_name}={value}{flags}{'; Secure' if secure else ''}"


class Access:
    """The decision for one bridge: the mesh secret, a dashboard session, or this machine."""

    def __init__(self, mesh_secret: str, sessions: DashboardSessions, port: Callable[[], int]) -> None:
        self._bearer = f"Bearer {mesh_secret}".encode()
        self.sessions = sessions
        self._port = port

    def has_secret(self, conn: HTTPConnection) -> bool:
        given = conn.headers.get("authorization", "")
        return bool(given) and hmac.compare_digest(given.encode(), self._bearer)

    def is_local(self, conn: HTTPConnection) -> bool:
        """A loopback peer naming a loopback Host with our port, through no proxy."""
        client = conn.client.host if conn.client else None
        if not is_loopback_ip(client):
            return False
        if any(name in conn.headers for name in PROXY_HEADERS):
            return False
        return loopback_host_header(conn.headers.get("host", ""), self._port())

    def has_session(self, conn: HTTPConnection) -> bool:
        return self.sessions.valid(conn.cookies.get(self.sessions.cookie_name))

    def refusal(self, conn: HTTPConnection) -> str | None:
        """None when the caller may read ``/api/*``; else why not (for the 401 body)."""
        if "authorization" in conn.headers:
            return None if self.has_secret(conn) else "wrong mesh secret in Authorization"
        if self.has_session(conn) or self.is_local(conn):
            return None
        return ("the status API answers this machine (a loopback client naming a loopback Host), a dashboard "
                "session (open the one-time link from llmlab up or llmlab dashboard) or "
                "'Authorization: Bearer <mesh secret>'")
