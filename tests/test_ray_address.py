"""Which address a node gives Ray when it joins a cluster (``ray_runtime.own_node_ip``).

The two-host behaviour is tested on namespace hosts (tests/lan/test_lan_ray.py); these pin
the rule on loopback: the route's source address, and ``--advertise-host`` only when it is
one of this machine's addresses; and how ``llmlab doctor`` judges the Ray node a node's
driver attached to (``GetInfo.ray``).
"""

from __future__ import annotations

from llmlab_grpc.doctor.node import _ray
from llmlab_grpc.proto.llmlab.v1 import common_pb2, node_pb2
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


def _info(**ray: object) -> node_pb2.GetInfoResponse:
    reply = node_pb2.GetInfoResponse(info=common_pb2.NodeInfo(name="b", address="192.168.1.11:50051", roles=["llm"],
                                                              models=["m"]))
    reply.ray.CopyFrom(node_pb2.RayAttachment(cluster_address="192.168.1.10:6379", ray_node_id="ab" * 28, **ray))
    return reply


def test_doctor_fails_a_driver_attached_to_another_machines_ray_node() -> None:
    check = _ray(_info(ray_node_ip="192.168.1.10", on_this_machine=False))
    assert check.verdict == "fail" and "192.168.1.10" in check.detail and "not on b's machine" in check.detail
    assert "ray start --address=192.168.1.10:6379 --node-ip-address=192.168.1.11" in check.fix


def test_doctor_names_the_ray_node_of_a_healthy_node() -> None:
    check = _ray(_info(ray_node_ip="192.168.1.11", on_this_machine=True))
    assert check.verdict == "ok" and "Ray node abababab at 192.168.1.11, on its own machine" in check.detail
