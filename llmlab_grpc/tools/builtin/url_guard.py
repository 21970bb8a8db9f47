"""Which URLs and addresses the browser may reach: http/https to public addresses only.

A browser driven by a model is a server-side request forgery waiting to happen: a
page (or a prompt) can point it at ``http://169.254.169.254/`` or a router's admin
page on the LAN. ``UrlGuard`` is the one place that decides. It checks the scheme,
resolves the host itself (``getaddrinfo`` in a thread) and refuses the request when
*any* resolved address is not public, so a name that answers with both a public and
a private address cannot slip through. The same guard is asked again by the route
handler for every request the page makes and by the egress proxy for every
connection Chromium opens (``egress_proxy.py``), which connects only to the address
it just checked, so DNS rebinding between the check and the connection gains nothing.

``allow_private`` (the node's ``--allow-private-urls``) lifts the refusal of
loopback, private, link-local, CGNAT, multicast, unspecified and reserved addresses,
for LAN pages and tests. Cloud metadata endpoints stay refused even then: they hand
out credentials and no page a user wants to read lives there. So do the mesh's own
gRPC and HTTP ports (``mesh``, a ``mesh.endpoints.MeshEndpoints`` a node attaches):
a tool that could call them from inside would read the pairing token or talk to the
mesh as one of its machines.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import SplitResult, urlsplit

from llmlab_grpc.tools.base import ToolFailure

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
"""``(host, port) -> addresses`` as strings; blocking, so it runs in a thread."""


class MeshPorts(Protocol):
    """What the guard asks about the mesh's own servers (``mesh.endpoints.MeshEndpoints``)."""

    async def refusal(self, ip: IPAddress, port: int) -> str | None: ...

ALLOWED_SCHEMES = ("http", "https")
RESOLVE_TIMEOUT_S = 10.0
FLAG_HINT = "start the node with --allow-private-urls to allow it"

METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
    "169.254.170.2",    # AWS ECS task metadata
    "100.100.100.200",  # Alibaba Cloud
    "fd00:ec2::254",    # AWS IPv6 instance metadata
))
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})

_NETWORKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("unspecified", ("0.0.0.0/8", "::/128")),
    ("loopback", ("127.0.0.0/8", "::1/128")),
    ("private", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10")),
    ("link-local", ("169.254.0.0/16", "fe80::/10")),
    ("shared (CGNAT)", ("100.64.0.0/10",)),
    ("multicast", ("224.0.0.0/4", "ff00::/8")),
    ("reserved", ("240.0.0.0/4", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24",
                  "203.0.113.0/24", "100::/64", "2001:db8::/32")),
)
_CATEGORIES = tuple((name, tuple(ipaddress.ip_network(n) for n in nets)) for name, nets in _NETWORKS)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlRefused(ToolFailure):
    """The URL or an address it resolves to is not allowed (ToolError code REFUSED)."""

    def __init__(self, message: str) -> None:
        super().__init__("REFUSED", message)


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4), which is where it really goes."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def classify(ip: IPAddress) -> str | None:
    """``None`` for a public address, else why not: "metadata", "loopback", "private", ...

    An IPv6 address that embeds an IPv4 one is judged by the IPv4 address, so
    ``::ffff:10.0.0.1`` is private like ``10.0.0.1``.
    """
    inner = embedded_ipv4(ip)
    if inner is not None:
        return classify(inner)
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    for name, networks in _CATEGORIES:
        if any(ip in net for net in networks):
            return name
    if not ip.is_global:
        return "reserved"
    return None


def _same_address(host: str, ip: IPAddress) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")) == ip
    except ValueError:
        return False


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``getaddrinfo`` gives for a TCP connection, in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Target:
    """Where a URL points: scheme, host as the URL names it, port."""

    scheme: str
    host: str
    port: int


def parse_url(url: str) -> Target:
    """Check the scheme and shape of ``url`` without any network access."""
    if any(c.isspace() or ord(c) < 0x20 or c == "\\" for c in url):
        raise UrlRefused(f"refused: {url[:80]!r} contains whitespace, control characters or backslashes")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"refused: {url[:80]!r} is not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        shown = f"{scheme}:" if scheme else "a URL without a scheme"
        raise UrlRefused(f"refused: {shown} URLs are not allowed; only http:// and https:// are")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlRefused(f"refused: {url[:80]!r} has no host")
    return Target(scheme, host, port or (443 if scheme == "https" else 80))


class UrlGuard:
    """The address policy of one node; ``allow_private`` comes from ``--allow-private-urls``."""

    def __init__(self, allow_private: bool = False, resolver: Resolver | None = None,
                 mesh: MeshPorts | None = None, resolve_timeout_s: float = RESOLVE_TIMEOUT_S) -> None:
        self.allow_private = allow_private
        self._resolver = resolver or system_resolver
        self.mesh = mesh
        self.resolve_timeout_s = resolve_timeout_s

    def refusal(self, ip: IPAddress, host: str | None = None) -> str | None:
        """The refusal message for connecting to ``ip`` (named ``host``), or ``None`` if allowed."""
        kind = classify(ip)
        if kind is None:
            return None
        shown = str(ip)
        inner = embedded_ipv4(ip)
        if inner is not None:
            shown = f"{ip} (which reaches {inner})"
        subject = f"{host} resolves to {shown}, a" if host and not _same_address(host, ip) else f"{shown} is a"
        if kind == "cloud metadata":
            return f"refused: {subject} cloud metadata address; these are never allowed"
        if self.allow_private:
            return None
        article = "n" if kind[0] in "aeiou" else ""
        return f"refused: {subject}{article} {kind} address; {FLAG_HINT}"

    def check_host_name(self, host: str) -> None:
        """Refuse metadata host names before asking DNS about them."""
        if host.lower().rstrip(".") in METADATA_HOSTS:
            raise UrlRefused(f"refused: {host} is a cloud metadata host; these are never allowed")

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Resolve ``host`` and check every address; the allowed list, in resolver order."""
        self.check_host_name(host)
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                raw = await asyncio.wait_for(asyncio.to_thread(self._resolver, host, port), self.resolve_timeout_s)
            except TimeoutError as exc:
                raise ToolFailure("FAILED", f"could not resolve {host}: no answer in "
                                            f"{self.resolve_timeout_s:g} s") from exc
            except (OSError, UnicodeError) as exc:
                raise ToolFailure("FAILED", f"could not resolve {host}: {exc}") from exc
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in raw]
            if not addresses:
                raise ToolFailure("FAILED", f"could not resolve {host}: no addresses")
        for ip in addresses:
            message = self.refusal(ip, host)
            if message is None and self.mesh is not None:
                message = await self.mesh.refusal(ip, port)
            if message is not None:
                raise UrlRefused(message)
        return addresses

    async def check_url(self, url: str) -> tuple[Target, list[IPAddress]]:
        """Scheme, shape and every resolved address of ``url``; raises ``UrlRefused``."""
        target = parse_url(url)
        return target, await self.resolve(target.host, target.port)
