"""Zeroconf (mDNS) announcement and browsing of ``_llmlab._tcp.local.``.

The TXT record carries the node id, name, roles, version and mesh id (a digest of
the secret, never the secret). Found nodes of our mesh are handed to a callback as
candidate addresses; membership then confirms them with a direct, authenticated
heartbeat before they enter the peer table, so an announcement alone proves nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass

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
    address: str


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
        address=f"{addresses[0]}:{info.port}",
    )


class MdnsDiscovery:
    """Announces this node and reports same-mesh nodes found on the LAN."""

    def __init__(
        self,
        self_info: common_pb2.NodeInfo,
        on_found: Callable[[Announcement], None],
        on_lost: Callable[[str], None],
        interface: str = "",
    ) -> None:
        self._self = self_info
        self._on_found = on_found
        self._on_lost = on_lost
        self._interface = interface
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._service: AsyncServiceInfo | None = None
        self._names: dict[str, str] = {}  # instance name -> node id
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        interfaces = [self._interface] if self._interface else InterfaceChoice.All
        self._aiozc = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        host, _, port = self._self.address.rpartition(":")
        self._service = AsyncServiceInfo(
            SERVICE_TYPE,
            instance_name(self._self),
            addresses=[socket.inet_aton(host)],
            port=int(port),
            properties=txt_properties(self._self),
            server=f"llmlab-{self._self.node_id.encode().hex()[:12]}.local.",
        )
        await self._aiozc.async_register_service(self._service, allow_name_change=True)
        self._browser = AsyncServiceBrowser(self._aiozc.zeroconf, [SERVICE_TYPE], handlers=[self._on_change])

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if self._service is not None and name == self._service.name:
            return
        if state_change is ServiceStateChange.Removed:
            node_id = self._names.pop(name, None)
            if node_id:
                self._on_lost(node_id)
            return
        task = asyncio.ensure_future(self._resolve(zeroconf, service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, zeroconf: Zeroconf, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(zeroconf, 3000):
            return
        found = parse_service(info)
        if found is None or found.node_id == self._self.node_id:
            return
        if found.mesh_id != self._self.mesh_id:
            log.debug("ignoring %s: it belongs to another mesh (%s)", found.name, found.mesh_id)
            return
        self._names[name] = found.node_id
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
