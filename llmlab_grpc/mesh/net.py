"""Which address a node tells its peers to dial (one address; see addresses.py for the set)."""

from __future__ import annotations

from llmlab_grpc.mesh.addresses import WILDCARDS, primary_host, usable_addresses

__all__ = ["WILDCARDS", "advertised_host", "lan_ipv4_addresses"]


def lan_ipv4_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses, best first (LAN, link-local, virtual bridges)."""
    return [a.ip for a in usable_addresses()]


def advertised_host(bind_host: str, advertise_host: str = "") -> str:
    """The explicit advertise host, else the bind host, else (wildcard) the best LAN address."""
    return primary_host(bind_host, advertise_host)
