"""Checks of this host alone (``llmlab doctor --offline``): interfaces, multicast, ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from llmlab_grpc.doctor import Check, fail, ok, warn
from llmlab_grpc.mesh.addresses import LocalAddress, announced_hosts, local_addresses, usable_addresses

SELF_TEST_TYPE = "_llmlabdoc._tcp.local."


def check_interfaces(local: list[LocalAddress] | None = None) -> Check:
    """Which addresses a node started here would announce, and in which order."""
    local = local_addresses() if local is None else local
    usable = usable_addresses(local)
    listed = ", ".join(f"{a.interface} {a.ip}/{a.prefix} ({a.kind})" for a in usable) or "none"
    if not usable:
        return fail("interfaces", "only loopback: no LAN address on this host",
                    "connect this host to the LAN (or check `ip addr`); peers cannot reach 127.0.0.1")
    first = announced_hosts("0.0.0.0", local=local)[0]
    if usable[0].kind != "lan":
        return warn("interfaces", f"{listed}; no ordinary LAN interface, a node would announce {first} first",
                    "if peers cannot reach that address, start nodes with --advertise-host <an address they reach>")
    return ok("interfaces", f"{listed}; a node announces {first} first (bridges last)")


async def _hears_itself(address: LocalAddress, seconds: float) -> bool:
    """Register a throw-away service on one interface and wait to hear it come back."""
    aiozc = AsyncZeroconf(interfaces=[address.ip], ip_version=IPVersion.V4Only)
    probe = f"doctor-{os.getpid()}-{address.ip.replace('.', '-')}.{SELF_TEST_TYPE}"
    heard = asyncio.Event()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if name == probe and state_change is not ServiceStateChange.Removed:
            heard.set()

    info = AsyncServiceInfo(SELF_TEST_TYPE, probe, addresses=[socket.inet_aton(address.ip)], port=9,
                            server=f"doctor-{os.getpid()}.local.")
    browser = None
    try:
        await aiozc.async_register_service(info, allow_name_change=True)
        browser = AsyncServiceBrowser(aiozc.zeroconf, [SELF_TEST_TYPE], handlers=[on_change])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(heard.wait(), seconds)
        return heard.is_set()
    except OSError:
        return False
    finally:
        if browser is not None:
            await browser.async_cancel()
        with contextlib.suppress(Exception):
            await aiozc.async_unregister_all_services()
        await aiozc.async_close()


async def check_multicast(seconds: float = 3.0, local: list[LocalAddress] | None = None) -> Check:
    """The mDNS self-test: does an announcement on each interface come back to this host?"""
    usable = usable_addresses(local)
    if not usable:
        return fail("multicast", "no interface to test", "connect this host to the LAN")
    results = await asyncio.gather(*(_hears_itself(a, seconds) for a in usable))
    heard = [a for a, yes in zip(usable, results, strict=True) if yes]
    deaf = [a for a, yes in zip(usable, results, strict=True) if not yes]

    def names(found: list[LocalAddress]) -> str:
        return ", ".join(f"{a.interface} {a.ip}" for a in found)

    if not heard:
        return fail("multicast", f"no mDNS announcement came back on any interface ({names(deaf)})",
                    "multicast is blocked here (a firewall closing 5353/udp?): open it, or join with "
                    "--peer HOST:PORT of another node (one seed is enough)")
    lan_deaf = [a for a in deaf if a.kind == "lan"]
    if lan_deaf:
        return warn("multicast", f"heard on {names(heard)}; not on {names(lan_deaf)}",
                    "open 5353/udp on those interfaces, or use --peer HOST:PORT for hosts only reachable there")
    return ok("multicast", f"this host hears its own mDNS on {names(heard)}")


def check_port(port: int) -> Check:
    """Whether a node could listen on ``port`` (the gRPC port peers dial)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            return warn("ports", f"TCP {port} is in use here ({exc.strerror}): a node already runs, or another "
                                 "program holds it", "if it is not an llmlab node, start the node with --port "
                                                    "<another> and open that port in the firewall")
    return ok("ports", f"TCP {port} is free for a node; peers also need 5353/udp (mDNS) and the bridge's HTTP "
                       "port open to the LAN")
