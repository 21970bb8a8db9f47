"""A node's addresses: which ones it announces, and in which order it dials a peer's.

A node is its node id plus a set of addresses; an address is a way to reach it, never
its identity. Most developer machines hold addresses no other host can reach: every
Docker host has ``docker0`` = 172.17.0.1, VM and container bridges (virbr*, br-*, cni*)
repeat the same private ranges on every machine, and a host may carry a link-local
169.254.x.x address or sit on two LANs at once. Announcing only the first address found
(often docker0's) hid every node from every other. So:

- a node announces every usable IPv4 address (never loopback to a LAN), best first:
  ordinary LAN interfaces, then link-local, then container/virtual bridges;
- a dialer ranks a peer's addresses against its own interfaces: a subnet it shares on a
  real interface first (link-local after LAN), then other addresses in the peer's order,
  link-local ones it does not share next, and an address inside one of its own virtual
  bridges' subnets last (there, 172.17.0.1 is the
  dialer's own docker0, not the peer); it never dials its own address;
- ``--advertise-host`` (or a bind to one specific address) overrides all of it.

``primary_host`` is "this host's own chosen LAN address", the one to give software that
takes a single address (Ray's ``_node_ip_address``, the bridge's dashboard link).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import ifaddr

WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})

VIRTUAL_PREFIXES: tuple[str, ...] = (
    "docker", "br-", "virbr", "veth", "cni", "flannel", "cali", "weave", "podman", "lxcbr", "lxdbr",
    "vboxnet", "vmnet", "kube", "cilium", "vnet",
)
"""Interface name prefixes of container and VM bridges: their addresses repeat across hosts."""

LINK_LOCAL = ipaddress.ip_network("169.254.0.0/16")


@dataclass(frozen=True)
class LocalAddress:
    """One IPv4 address of this machine, with its interface and subnet."""

    ip: str
    prefix: int
    interface: str

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{self.ip}/{self.prefix}", strict=False)

    @property
    def loopback(self) -> bool:
        return self.ip.startswith("127.")

    @property
    def link_local(self) -> bool:
        return ipaddress.ip_address(self.ip) in LINK_LOCAL

    @property
    def virtual(self) -> bool:
        return is_virtual_interface(self.interface)

    @property
    def kind(self) -> str:
        """"loopback", "lan", "link-local" or "virtual" (a container/VM bridge)."""
        if self.loopback:
            return "loopback"
        if self.virtual:
            return "virtual"
        return "link-local" if self.link_local else "lan"


def is_virtual_interface(name: str) -> bool:
    return name.startswith(VIRTUAL_PREFIXES)


def interface_ips() -> Iterator[tuple[str, int, str]]:
    """Every (address, prefix length, interface) of this machine, IPv4 and IPv6 (scope ids dropped)."""
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            raw = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            yield raw.split("%", 1)[0], int(ip.network_prefix), adapter.nice_name or adapter.name


def local_addresses() -> list[LocalAddress]:
    """Every IPv4 address of this machine, loopback included, in interface order."""
    return [LocalAddress(ip, prefix, name) for ip, prefix, name in interface_ips() if ":" not in ip]


_KIND_ORDER = {"lan": 0, "link-local": 1, "virtual": 2, "loopback": 3}


def usable_addresses(local: Sequence[LocalAddress] | None = None) -> list[LocalAddress]:
    """This machine's addresses worth announcing to LAN peers, best first (never loopback)."""
    local = local_addresses() if local is None else local
    ranked = sorted((a for a in local if not a.loopback), key=lambda a: _KIND_ORDER[a.kind])
    return list({a.ip: a for a in ranked}.values())


def announced_hosts(bind_host: str, advertise_host: str = "",
                    local: Sequence[LocalAddress] | None = None) -> list[str]:
    """The hosts a node announces, best first.

    ``advertise_host`` wins; a specific bind address is the only one that works; a
    wildcard bind announces every usable address (loopback only on a machine with none).
    """
    if advertise_host:
        return [advertise_host]
    if bind_host not in WILDCARDS:
        return [bind_host]
    return [a.ip for a in usable_addresses(local)] or ["127.0.0.1"]


def primary_host(bind_host: str = "", advertise_host: str = "",
                 local: Sequence[LocalAddress] | None = None) -> str:
    """This host's own chosen address: the first one it announces (see module docstring)."""
    return announced_hosts(bind_host, advertise_host, local)[0]


def split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def _class_of(host: str, local: Sequence[LocalAddress]) -> int:
    """0 a subnet shared on a real interface, 1 a shared link-local one, 2 anything else routable,
    3 link-local we do not share, 4 inside one of our own container/VM bridges' subnets."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return 2  # a name: resolve it when dialing
    if ip.is_loopback:
        return 0  # only ever announced by a node on this same machine
    link_local = ip in LINK_LOCAL
    for mine in local:
        if not mine.loopback and ip in mine.network:
            return 4 if mine.virtual else (1 if link_local else 0)
    return 3 if link_local else 2


def own_addresses(port: int, local: Sequence[LocalAddress] | None = None,
                  extra_hosts: Iterable[str] = ()) -> set[str]:
    """Every ``host:port`` at which this node itself would answer (never dial these)."""
    local = local_addresses() if local is None else local
    return {f"{h}:{port}" for h in [*(a.ip for a in local), *extra_hosts]}


def rank(addresses: Iterable[str], local: Sequence[LocalAddress] | None = None,
         own: Iterable[str] = ()) -> list[str]:
    """A peer's ``host:port`` addresses in the order to dial them from this machine.

    Duplicates and this node's own addresses (``own``) are dropped; ties keep the peer's order.
    """
    local = local_addresses() if local is None else local
    skip = set(own)
    unique = [a for a in dict.fromkeys(addresses) if a and a not in skip]
    return sorted(unique, key=lambda a: _class_of(split(a)[0], local))
