"""Browse ``_llmlab._tcp.local.`` for a few seconds, as a node would, and report every record."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from llmlab_grpc.mesh.discovery import SERVICE_TYPE, Announcement, parse_service


@dataclass(frozen=True)
class Seen:
    """One llmlab record heard on the LAN: its instance name and what it announces."""

    instance: str
    announcement: Announcement


async def scan(seconds: float = 3.0) -> list[Seen]:
    """Every well-formed llmlab record heard within ``seconds`` on every interface."""
    aiozc = AsyncZeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)
    names: set[str] = set()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is not ServiceStateChange.Removed:
            names.add(name)

    browser = AsyncServiceBrowser(aiozc.zeroconf, [SERVICE_TYPE], handlers=[on_change])
    try:
        await asyncio.sleep(seconds)
        found: list[Seen] = []
        for name in sorted(names):
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if await info.async_request(aiozc.zeroconf, 1500):
                parsed = parse_service(info)
                if parsed is not None:
                    found.append(Seen(name, parsed))
        return found
    finally:
        await browser.async_cancel()
        await aiozc.async_close()
