"""Which address a node tells its peers to dial."""

from __future__ import annotations

import ifaddr

WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def lan_ipv4_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses, in interface order."""
    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                found.append(ip.ip)
    return found


def advertised_host(bind_host: str, advertise_host: str = "") -> str:
    """The explicit advertise host, else the bind host, else (wildcard) the first LAN address."""
    if advertise_host:
        return advertise_host
    if bind_host not in WILDCARDS:
        return bind_host
    lan = lan_ipv4_addresses()
    return lan[0] if lan else "127.0.0.1"
