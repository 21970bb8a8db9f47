"""The harness itself on the plain case: three hosts with one address each form the mesh."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lan.harness import LAN1, Lan


@pytest.fixture(scope="module")
def lan() -> Iterator[Lan]:
    with Lan(3) as lan:
        lan.boot("--roles", "planner,cache")
        yield lan


def test_three_plain_hosts_form_a_mesh_at_their_lan_addresses(lan: Lan) -> None:
    lan.wait_mesh(timeout=30)
    for host in lan.hosts:
        peers = {p.info.name: p for p in host.node.peers()}
        others = [h for h in lan.hosts if h is not host]
        assert set(peers) == {h.node.name for h in others}
        for other in others:
            assert peers[other.node.name].info.address == f"{other.ip}:50051"
            assert peers[other.node.name].info.address.startswith(LAN1)
