"""llmlab doctor's verdicts that need no network: interfaces, verdict order (the rest runs in tests/lan/)."""

from __future__ import annotations

from llmlab_grpc.doctor import fail, ok, warn, worst
from llmlab_grpc.doctor.host import check_interfaces
from llmlab_grpc.mesh.addresses import LocalAddress

LO = LocalAddress("127.0.0.1", 8, "lo")


def test_interfaces_name_what_a_node_would_announce_first() -> None:
    check = check_interfaces([LO, LocalAddress("172.17.0.1", 16, "docker0"), LocalAddress("192.168.1.5", 24, "wlan0")])
    assert check.verdict == "ok" and "announces 192.168.1.5 first" in check.detail and "docker0" in check.detail


def test_a_host_with_only_bridges_warns_and_one_with_only_loopback_fails() -> None:
    only_bridge = check_interfaces([LO, LocalAddress("172.17.0.1", 16, "docker0")])
    assert only_bridge.verdict == "warn" and "--advertise-host" in only_bridge.fix
    alone = check_interfaces([LO])
    assert alone.verdict == "fail" and alone.fix


def test_the_worst_verdict_wins() -> None:
    assert worst([ok("a", ""), warn("b", "", "x")]) == "warn"
    assert worst([warn("b", "", "x"), fail("c", "", "y"), ok("a", "")]) == "fail"
    assert worst([]) == "ok"
