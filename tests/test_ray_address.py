"""Which address a node gives Ray when it joins a cluster (``ray_runtime.own_node_ip``).

The two-host behaviour is tested on namespace hosts (tests/lan/test_lan_ray.py); these pin
the rule on loopback: the route's source address, and ``--advertise-host`` only when it is
one of this machine's addresses.
"""

from __future__ import annotations

from llmlab_grpc.ray_runtime import head_host, own_node_ip, route_source


def test_the_address_is_the_source_of_the_route_to_the_head() -> None:
    assert route_source("127.0.0.1") == "127.0.0.1"
    # A head reached over loopback is this machine's own: Ray's choice of its local raylet stands.
    assert own_node_ip("127.0.0.1:6379") == ""


def test_a_local_advertise_host_wins_and_a_foreign_one_is_ignored() -> None:
    assert own_node_ip("127.0.0.1:6379", advertise_host="127.0.0.1") == "127.0.0.1"
    assert own_node_ip("127.0.0.1:6379", advertise_host="203.0.113.7") == ""  # not this machine's: the route


def test_head_host_parsing() -> None:
    assert head_host("10.0.0.5:6379") == "10.0.0.5"
    assert head_host("[fd00::5]:6379") == "fd00::5"
