"""One authenticated aio channel per peer address, reused by every service client.

Channels are expensive to open and cheap to share; the pool owns them so that the
router, membership and replication all reach a peer over the same HTTP/2 connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

import grpc

from llmlab_grpc.mesh.auth import client_interceptors

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest gRPC message a node sends or accepts (screenshots, cache batches)."""

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def server_options(max_receive_bytes: int) -> list[tuple[str, int]]:
    """The server's options: replies as large as a channel's, requests no larger than the
    largest one a handler could accept (llmlab_grpc/limits.py), so gRPC refuses a larger
    one itself (RESOURCE_EXHAUSTED) instead of buffering it for a handler to refuse."""
    limit = min(max_receive_bytes, MAX_MESSAGE_BYTES)
    return [(name, limit if name == "grpc.max_receive_message_length" else value) for name, value in CHANNEL_OPTIONS]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS; with ``ca`` the peer's certificate is checked against it (mTLS)."""

    cert: Path
    key: Path
    ca: Path | None = None

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes() if self.ca else self.cert.read_bytes(),
            private_key=self.key.read_bytes(),
            certificate_chain=self.cert.read_bytes(),
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.ca.read_bytes() if self.ca else None,
            require_client_auth=self.ca is not None,
        )


def open_channel(address: str, secret: str, tls: TlsFiles | None = None) -> grpc.aio.Channel:
    """An aio channel to ``address`` that sends the mesh secret on every call."""
    interceptors = client_interceptors(secret)
    if tls is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS, interceptors=interceptors)
    return grpc.aio.secure_channel(
        address, tls.channel_credentials(), options=CHANNEL_OPTIONS, interceptors=interceptors
    )


class ChannelPool:
    """Address → channel, opened on first use, closed on ``drop`` or ``close``."""

    def __init__(self, secret: str, tls: TlsFiles | None = None) -> None:
        self._secret = secret
        self._tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = open_channel(address, self._secret, self._tls)
        return channel

    async def drop(self, address: str) -> None:
        channel = self._channels.pop(address, None)
        if channel is not None:
            await _close(channel)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await _close(channel)


async def _close(channel: grpc.aio.Channel, limit_s: float = 2.0) -> None:
    """Close a channel, bounded: a close racing a call on a dying connection must not stall the
    caller (membership's heartbeat round awaits it)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(channel.close(grace=None), limit_s)
