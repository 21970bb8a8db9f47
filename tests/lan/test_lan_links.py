"""Broken links on a LAN: a one-way link, a host where multicast is blocked, a duplicate node id.

Four hosts, booted once for the module:
  h1 (lan1) planner, refuses every connection h2 opens (the link h1-h2 works one way);
  h2 (lan2) and h3 (lan3) serve the calculator tool; lan2 sorts first, so a router that
             ignored the one-way link would pick it;
  h4 (lan4) planner with mDNS dropped both ways, joined through one --peer seed: h3's
             link-local address, which h3 announces but not first (a seed works whatever
             the node declares, and the dialer then moves to the shared LAN address).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from llmlab_grpc.proto.llmlab.v1 import planner_pb2
from tests.lan.harness import Lan, wait_for


@pytest.fixture(scope="module")
def lan() -> Iterator[Lan]:
    with Lan(4, link_local=(3, 4)) as lan:
        h1, h2, h3, h4 = lan.hosts
        h1.drop_inbound_from(h2)
        h4.drop_mdns()
        h1.start("--roles", "planner")
        for host in (h2, h3):
            host.start("--roles", "tools", "--tools", "calculator")
        h4.start("--roles", "planner", "--peer", f"{h3.link_local}:50051")
        yield lan


def test_a_one_way_link_is_listed_as_such_at_both_ends(lan: Lan) -> None:
    h1, h2, h3, _ = lan.hosts
    wait_for(lambda: h1.node.peer_states().get("lan2") == "one-way" and h2.node.peer_states().get("lan1") == "one-way",
             30, what="both ends of h1-h2 to say one-way",
             describe=lambda: {h.name: h.node.peer_states() for h in (h1, h2)})
    assert h1.node.peer_states().get("lan3") == "alive" and h3.node.alive_peers() >= {"lan1", "lan2"}
    rows = {p.info.name: p for p in h2.node.peers()}
    assert f"{h1.ip}:50051" in rows["lan1"].detail  # which address was tried
    out = h1.llmlab("peers", "--target", h1.target)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("lan2 "))
    assert "one-way" in line and "cannot reach us" in line


def test_doctor_names_the_one_way_link(lan: Lan) -> None:
    h1 = lan.hosts[0]
    wait_for(lambda: h1.node.peer_states().get("lan2") == "one-way", 30, what="h1 to see lan2 one-way")
    out = h1.llmlab("doctor", "--target", h1.target, "--json")
    assert out.returncode == 1, out.stderr  # a failed check
    checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
    assert checks["one-way"]["verdict"] == "fail" and "lan2" in checks["one-way"]["detail"]
    assert "both ways" in checks["one-way"]["fix"]
    assert checks["multicast"]["verdict"] == "ok" and checks["node"]["verdict"] == "ok"


def test_doctor_offline_on_a_host_without_multicast_says_so(lan: Lan) -> None:
    out = lan.hosts[3].llmlab("doctor", "--offline", "--json")
    checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
    assert out.returncode == 1 and checks["multicast"]["verdict"] == "fail"
    assert "--peer" in checks["multicast"]["fix"]
    assert checks["interfaces"]["verdict"] == "ok" and lan.hosts[3].ip in checks["interfaces"]["detail"]


def test_nothing_is_routed_over_a_one_way_link(lan: Lan) -> None:
    h1 = lan.hosts[0]
    wait_for(lambda: h1.node.peer_states().get("lan2") == "one-way", 30, what="h1 to see lan2 one-way")
    for _ in range(3):
        query = planner_pb2.Query(text="What is 12 * 7?")
        task = h1.node.call("/llmlab.v1.Planner/Ask", planner_pb2.AskRequest(query=query), planner_pb2.AskResponse,
                            timeout=60).task
        assert "84" in task.answer, task
        (step,) = task.steps
        assert (step.name, step.node_name) == ("calculator", "lan3")


def test_a_host_without_multicast_joins_through_one_seed_and_says_why(lan: Lan) -> None:
    h4 = lan.hosts[3]
    wait_for(lambda: h4.node.alive_peers() >= {"lan1", "lan2", "lan3"}
             and all("lan4" in h.node.alive_peers() for h in lan.hosts[:3]),
             30, what="h4 in everyone's table", describe=lambda: {h.name: h.node.peer_states() for h in lan.hosts})
    rows = {p.info.name: p for p in h4.node.peers()}
    assert rows["lan3"].info.address == f"{lan.hosts[2].ip}:50051"  # seeded by link-local, kept on the LAN
    wait_for(lambda: "multicast seems blocked" in h4.node.log(), 20, what="h4's multicast warning")
    log = h4.node.log()
    assert log.count("multicast seems blocked") == 1 and "--peer" in log
    for host in lan.hosts[:3]:  # the others hear mDNS fine: no warning there
        assert "multicast seems blocked" not in host.node.log()


def test_a_duplicate_node_id_is_refused_and_nobody_flaps(lan: Lan) -> None:
    h1, h2, h3, h4 = lan.hosts
    original = f"{h3.ip}:50051"
    watchers = [h for h in (h2, h4) if h.node.alive()]
    wait_for(lambda: all(h.node.peer_states().get("lan3") == "alive" for h in watchers), 30, what="lan3 alive")
    copy = h1.start("--roles", "tools", "--tools", "calculator", name="lan3", port=50052)
    seen: set[tuple[str, str, str]] = set()

    def exited() -> bool:
        for host in watchers:
            for peer in host.node.peers():
                if peer.info.node_id == "lan3":
                    seen.add((host.name, peer.info.address, str(peer.info.started_unix_ms)))
        return copy.wait_exit(0.05) is not None

    wait_for(exited, 30, interval=0.05, what="the duplicate to exit")
    assert copy.proc.process.returncode == 2
    assert "already used by a live node at" in copy.log() and original in copy.log()
    # Every table kept the original lan3, at its own address, the whole time.
    assert {addr for _, addr, _ in seen} == {original}
    assert len({started for _, _, started in seen}) == 1
    assert all(h.node.peer_states().get("lan3") == "alive" for h in watchers)


def test_doctor_names_a_node_it_hears_but_cannot_reach_and_why(lan: Lan) -> None:
    """Last: h3's firewall drops its connections to h1's gRPC port (mDNS still flows); healed after."""
    h1, h3 = lan.hosts[0], lan.hosts[2]
    h3.drop_tcp_to(h1)
    try:
        out = h3.llmlab("doctor", "--target", h3.target, "--json")
        checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
        assert out.returncode == 1
        assert checks["reachable"]["verdict"] == "fail"
        assert f"lan1 ({h1.ip}:50051: timeout" in checks["reachable"]["detail"]
        assert "gRPC port" in checks["reachable"]["fix"]
    finally:
        h3.heal()
