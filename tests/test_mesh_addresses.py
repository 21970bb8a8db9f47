"""Which addresses a node announces and in which order it dials a peer's (mesh/addresses.py)."""

from __future__ import annotations

from llmlab_grpc.mesh.addresses import LocalAddress, announced_hosts, own_addresses, primary_host, rank

# A developer machine: docker0 first (lowest interface index), Wi-Fi LAN, a VM bridge, link-local.
HOST = [
    LocalAddress("127.0.0.1", 8, "lo"),
    LocalAddress("172.17.0.1", 16, "docker0"),
    LocalAddress("192.168.1.20", 24, "wlan0"),
    LocalAddress("192.168.122.1", 24, "virbr0"),
    LocalAddress("169.254.7.9", 16, "eth0"),
]


def test_a_wildcard_bind_announces_lan_then_link_local_then_bridges_never_loopback() -> None:
    assert announced_hosts("0.0.0.0", local=HOST) == ["192.168.1.20", "169.254.7.9", "172.17.0.1", "192.168.122.1"]
    assert primary_host("0.0.0.0", local=HOST) == "192.168.1.20"


def test_advertise_host_and_a_specific_bind_override_everything() -> None:
    assert announced_hosts("0.0.0.0", "box.lan", local=HOST) == ["box.lan"]
    assert announced_hosts("127.0.0.1", local=HOST) == ["127.0.0.1"]


def test_a_machine_with_loopback_only_announces_loopback() -> None:
    assert announced_hosts("0.0.0.0", local=[LocalAddress("127.0.0.1", 8, "lo")]) == ["127.0.0.1"]


def test_a_peers_addresses_are_dialled_shared_subnet_first_own_bridges_last() -> None:
    peer = ["172.17.0.1:50051", "10.9.0.5:50051", "169.254.3.3:50051", "192.168.1.31:50051"]
    assert rank(peer, local=HOST) == ["192.168.1.31:50051", "169.254.3.3:50051", "10.9.0.5:50051",
                                      "172.17.0.1:50051"]
    assert rank(["169.254.3.3:1", "10.9.0.5:1"], local=HOST[:3]) == ["10.9.0.5:1", "169.254.3.3:1"]


def test_own_addresses_are_never_dialled_and_ties_keep_the_peers_order() -> None:
    own = own_addresses(50051, local=HOST)
    assert "172.17.0.1:50051" in own and "192.168.1.20:50051" in own
    assert rank(["172.17.0.1:50051", "10.1.0.2:1", "10.1.0.1:1"], local=HOST, own=own) == ["10.1.0.2:1", "10.1.0.1:1"]
    # Another port on a shared address is another node on this machine: fine to dial.
    assert rank(["127.0.0.1:7001"], local=HOST, own={"127.0.0.1:7000"}) == ["127.0.0.1:7001"]
