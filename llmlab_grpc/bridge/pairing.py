"""Pairing credentials of mobile nodes: short-lived pairing tokens and per-device session tokens.

A **pairing token** is what the dashboard shows (and puts in the QR code). It lives
``ttl_s`` (10 min by default) and rotates: a fresh one is minted once the current one
has used half its life, so the token on screen is always valid for at least ``ttl_s/2``
and a few stay valid at once. It is a credential: anyone holding it can pair.

A **session token** is handed to a paired device in ``Welcome``. It names the device's
node_id and an expiry, signed with a key derived from the mesh secret and the bridge's
node_id, so a phone can rejoin under the same node_id after a network drop or a bridge
restart without a new pairing token, but cannot claim any other node_id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

SESSION_TTL_S = 24 * 3600.0


class PairingTokens:
    """Rotating short-lived pairing tokens."""

    def __init__(self, ttl_s: float = 600.0, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self._now = clock
        self._tokens: dict[str, float] = {}  # token -> expiry (unix seconds)

    def _prune(self) -> None:
        now = self._now()
        for token, expires in list(self._tokens.items()):
            if expires <= now:
                del self._tokens[token]

    def current(self) -> tuple[str, float]:
        """The token to show now and its expiry (unix seconds); mints one when needed."""
        self._prune()
        now = self._now()
        if self._tokens:
            token, expires = max(self._tokens.items(), key=lambda kv: kv[1])
            if expires - now >= self.ttl_s / 2:
                return token, expires
        token = secrets.token_urlsafe(12)
        self._tokens[token] = now + self.ttl_s
        return token, self._tokens[token]

    def valid(self, token: str) -> bool:
        """Whether ``token`` is an unexpired pairing token (constant-time per candidate)."""
        self._prune()
        given = token.encode()
        found = False
        for candidate in self._tokens:
            found |= hmac.compare_digest(given, candidate.encode())
        return found


class SessionTokens:
    """HMAC-signed ``node_id.expiry.mac`` tokens that let a device rejoin under its node_id."""

    def __init__(self, mesh_secret: str, bridge_node_id: str, ttl_s: float = SESSION_TTL_S) -> None:
        self._key = hashlib.sha256(
            b"llmlab-bridge-session\x00" + mesh_secret.encode() + b"\x00" + bridge_node_id.encode()
        ).digest()
        self.ttl_s = ttl_s

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")

    def issue(self, node_id: str) -> str:
        body = f"{node_id}.{int(time.time() + self.ttl_s)}"
        return f"s1.{body}.{self._mac(body)}"

    def node_of(self, token: str) -> str | None:
        """The node_id a valid, unexpired session token names; None otherwise."""
        if not token.startswith("s1."):
            return None
        body, _, mac = token[3:].rpartition(".")
        node_id, _, expires = body.rpartition(".")
        if not node_id or not expires.isdigit() or int(expires) < time.time():
            return None
        if not hmac.compare_digest(mac.encode(), self._mac(body).encode()):
            return None
        return node_id
