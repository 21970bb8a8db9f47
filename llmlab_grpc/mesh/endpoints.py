"""The mesh's own listening ports, which tools that fetch URLs must never reach.

A browser tool running on a mesh node connects from this machine, so a page it opens
on ``http://127.0.0.1:<bridge port>/api/pairing`` looks like a local dashboard and
would be handed the pairing token; one on a peer's gRPC port talks to the mesh from
inside. ``--allow-private-urls`` (LAN pages, tests) must not open that door. So the
URL guard asks ``MeshEndpoints.refusal(ip, port)`` for every address it lets a tool
dial, whatever the private-address policy says.

What counts as the mesh: every gRPC and HTTP address of this node and of every node
in the peer table (each announced address, not only the one in use), and of every node seen there before (kept up to
``REMEMBERED`` endpoints, so a peer that dropped out for a moment stays protected).
A port of this machine is refused on *every* local address (loopback, the wildcard,
each interface address): a node bound to ``0.0.0.0`` answers on all of them. Host
names in announced addresses are resolved (cached for ``RESOLVE_CACHE_S``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from llmlab_grpc.mesh.addresses import interface_ips

if TYPE_CHECKING:
    from llmlab_grpc.ports import LocalNode, PeersView

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

REMEMBERED = 1024
"""Endpoints of past peers kept after they left the table."""
RESOLVE_CACHE_S = 30.0
RESOLVE_TIMEOUT_S = 2.0
LOCAL_CACHE_S = 10.0


def _split(address: str) -> tuple[str, int] | None:
    """``HOST:PORT`` or ``http://HOST:PORT/...`` as (host, port); None when it names no port."""
    if not address:
        return None
    try:
        parts = urlsplit(address if "://" in address else f"//{address}")
        port = parts.port or ({"http": 80, "https": 443}.get(parts.scheme) if parts.scheme else None)
    except ValueError:
        return None
    host = (parts.hostname or "").rstrip(".").lower()
    return (host, port) if host and port else None


def _plain(ip: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address as the IPv4 address it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def local_addresses() -> set[IPAddress]:
    """Every address of this machine's interfaces."""
    found: set[IPAddress] = set()
    for raw, _prefix, _interface in interface_ips():
        try:
            found.add(_plain(ipaddress.ip_address(raw)))
        except ValueError:
            continue
    return found


class MeshEndpoints:
    """Answers "is (ip, port) one of the mesh's own servers?" for one node."""

    def __init__(self, me: LocalNode, peers: PeersView) -> None:
        self.me = me
        self.peers = peers
        self._seen: OrderedDict[tuple[str, int], str] = OrderedDict()  # (host, port) -> node name
        self._resolved: dict[str, tuple[float, set[IPAddress]]] = {}
        self._local: tuple[float, set[IPAddress]] = (0.0, set())

    # -- what the mesh listens on -----------------------------------------------------
    def _own(self) -> Iterable[tuple[tuple[str, int], str]]:
        me = self.me
        name = f"{me.name} (this node)"
        for address in (me.address, *me.addresses, me.http_url):
            if (split := _split(address)) is not None:
                yield split, name
                yield ("0.0.0.0", split[1]), name  # this machine's port, on every local address

    def endpoints(self) -> list[tuple[tuple[str, int], str]]:
        """(host, port) → node name of every known gRPC and HTTP endpoint, own ones first."""
        for record in self.peers.all():
            for address in (record.info.address, *record.info.addresses, record.info.http_url):
                if (split := _split(address)) is not None:
                    self._seen[split] = record.info.name or record.node_id
                    self._seen.move_to_end(split)
        while len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)
        return [*self._own(), *self._seen.items()]

    # -- addresses --------------------------------------------------------------------
    def _is_local(self, ip: IPAddress) -> bool:
        if ip.is_loopback or ip.is_unspecified:
            return True
        stamp, addresses = self._local
        if time.monotonic() - stamp > LOCAL_CACHE_S:
            addresses = local_addresses()
            self._local = (time.monotonic(), addresses)
        return ip in addresses

    async def _addresses(self, host: str) -> set[IPAddress]:
        try:
            return {_plain(ipaddress.ip_address(host.strip("[]")))}
        except ValueError:
            pass
        cached = self._resolved.get(host)
        if cached is not None and time.monotonic() - cached[0] < RESOLVE_CACHE_S:
            return cached[1]
        try:
            infos = await asyncio.wait_for(asyncio.to_thread(socket.getaddrinfo, host, None, type=socket.SOCK_STREAM),
                                           RESOLVE_TIMEOUT_S)
            found = {_plain(ipaddress.ip_address(str(i[4][0]).split("%", 1)[0])) for i in infos}
        except (OSError, TimeoutError, UnicodeError, ValueError):
            found = set()
        if len(self._resolved) > REMEMBERED:
            self._resolved.clear()
        self._resolved[host] = (time.monotonic(), found)
        return found

    async def refusal(self, ip: IPAddress, port: int) -> str | None:
        """The refusal message when ``ip:port`` is one of the mesh's own servers, else None."""
        ip = _plain(ip)
        target_local = self._is_local(ip)
        for (host, known_port), name in self.endpoints():
            if known_port != port:
                continue
            for known in await self._addresses(host):
                if known == ip or (target_local and self._is_local(known)):
                    return (f"refused: {ip}:{port} is a server of this llmlab mesh (node {name}); tools never "
                            "call the mesh's own gRPC or HTTP ports, even with --allow-private-urls")
        return None
