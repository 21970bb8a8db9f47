"""Zeroconf (mDNS) announcement and browsing of ``_llmlab._tcp.local.``.

The TXT record carries the node id, name, roles, version and mesh id (a digest of
the secret, never the secret); one A record per address the node announces (every
usable interface, see addresses.py), so a peer on any shared network finds one it can
dial. Found nodes of our mesh are handed to a callback with all their addresses;
membership then confirms them with a direct, authenticated heartbeat before they
enter the peer table, so an announcement alone proves nothing.

Where multicast does not get through (Wi-Fi client isolation, 5353/udp closed), a
node hears nothing, not even its own announcement: it then logs once that multicast
seems blocked and names ``--peer``, since one seed is enough to join.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from llmlab_grpc.proto.llmlab.v1 import common_pb2

SERVICE_TYPE = "_llmlab._tcp.local."
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Announcement:
    """What a node's TXT record says, plus the address it can be dialled at."""

    node_id: str
    name: str
    roles: tuple[str, ...]
    version: str
    mesh_id: str
    addresses: tuple[str, ...]  # "host:port", in the order announced

    @property
    def address(self) -> str:
        return self.addresses[0]


def instance_name(info: common_pb2.NodeInfo) -> str:
    """A DNS-safe, mesh-unique instance label."""
    label = re.sub(r"[^A-Za-z0-9-]", "-", info.name)[:40] or "node"
    return f"{label}-{info.node_id.encode().hex()[:12]}.{SERVICE_TYPE}"


def txt_properties(info: common_pb2.NodeInfo) -> dict[str, str]:
    return {
        "id": info.node_id,
        "name": info.name,
        "roles": ",".join(info.roles),
        "version": info.version,
        "mesh": info.mesh_id,
    }


def parse_service(info: AsyncServiceInfo) -> Announcement | None:
    """Read an announcement; None when it is not a well-formed llmlab record."""
    props = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else (v or ""))
        for k, v in (info.properties or {}).items()
    }
    addresses = info.parsed_addresses(IPVersion.V4Only)
    if not props.get("id") or not props.get("mesh") or not addresses or not info.port:
        return None
    return Announcement(
        node_id=props["id"],
        name=props.get("name", props["id"]),
        roles=tuple(r for r in props.get("roles", "").split(",") if r),
        version=props.get("version", ""),
        mesh_id=props["mesh"],
        addresses=tuple(f"{a}:{info.port}" for a in addresses),
    )


class MdnsDiscovery:
    """Announces this node and reports same-mesh nodes found on the LAN."""

    def __init__(
        self,
        self_info: common_pb2.NodeInfo,
        on_found: Callable[[Announcement], None],
        on_lost: Callable[[str, tuple[str, ...]], None],
        interface: str = "",
        silence_warning_s: float = 6.0,
    ) -> None:
        self._self = self_info
        self._on_found = on_found
        self._on_lost = on_lost
        self._interface = interface
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._service: AsyncServiceInfo | None = None
        self._names: dict[str, tuple[str, tuple[str, ...]]] = {}  # instance name -> (node id, addresses)
        self._tasks: set[asyncio.Task[None]] = set()
        self._silence_warning_s = silence_warning_s
        self.heard_any = False  # any mDNS answer at all, our own announcement included

    async def start(self) -> None:
        interfaces = [self._interface] if self._interface else InterfaceChoice.All
        self._aiozc = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        _, _, port = self._self.address.rpartition(":")
        hosts = [a.rpartition(":")[0] for a in (self._self.addresses or [self._self.address])]
        ips = await asyncio.to_thread(lambda: [_ipv4_of(h) for h in dict.fromkeys(hosts)])  # a name may need DNS
        self._service = AsyncServiceInfo(
            SERVICE_TYPE,
            instance_name(self._self),
            addresses=[socket.inet_aton(ip) for ip in dict.fromkeys(ips) if ip],
            port=int(port),
            properties=txt_properties(self._self),
            server=f"llmlab-{self._self.node_id.encode().hex()[:12]}.local.",
        )
        await self._aiozc.async_register_service(self._service, allow_name_change=True)
        self._browser = AsyncServiceBrowser(self._aiozc.zeroconf, [SERVICE_TYPE], handlers=[self._on_change])
        self._spawn(self._warn_if_silent())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _warn_if_silent(self) -> None:
        await asyncio.sleep(self._silence_warning_s)
        if not self.heard_any:
            log.warning(
                "no mDNS answer heard in %.0f s, not even this node's own announcement: multicast seems "
                "blocked on this network (Wi-Fi client isolation, or a firewall closing 5353/udp). "
                "Join with --peer HOST:PORT of another node: one seed is enough.", self._silence_warning_s)

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        self.heard_any = True
        if self._service is not None and name == self._service.name:
            return
        if state_change is ServiceStateChange.Removed:
            known = self._names.pop(name, None)
            if known:
                self._on_lost(*known)
            return
        self._spawn(self._resolve(zeroconf, service_type, name))

    async def _resolve(self, zeroconf: Zeroconf, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(zeroconf, 3000):
            return
        found = parse_service(info)
        if found is None:
            return
        if found.mesh_id != self._self.mesh_id:
            log.debug("ignoring %s: it belongs to another mesh (%s)", found.name, found.mesh_id)
            return
        # Our own id under another instance name is another process using our id: membership checks it.
        self._names[name] = (found.node_id, found.addresses)
        self._on_found(found)

    async def stop(self) -> None:
        """Unregister (sends the goodbye packets) and close."""
        for task in list(self._tasks):
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
        if self._aiozc is not None:
            if self._service is not None:
                await self._aiozc.async_unregister_service(self._service)
            await self._aiozc.async_close()


def _ipv4_of(host: str) -> str:
    """``host`` itself when it is an IPv4 address; a name (``--advertise-host box.lan``) resolved
    once for the A record; "" when it cannot be."""
    try:
        socket.inet_aton(host)
        if host.count(".") == 3:
            return host
    except OSError:
        pass
    try:
        return socket.gethostbyname(host)
    except OSError:
        log.warning("cannot resolve %s for the mDNS announcement; peers need --peer", host)
        return ""
