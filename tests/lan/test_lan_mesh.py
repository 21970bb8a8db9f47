"""Three hosts that each carry a docker0 bridge (172.17.0.1 everywhere), nodes started with defaults.

This is the case that never formed a mesh when a node announced its first address: every
node said 172.17.0.1. One LAN is booted for the whole module; the tests run in order and
the destructive ones (partition, SIGKILL) come last.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from llmlab_grpc.proto.llmlab.v1 import planner_pb2
from tests.lan.harness import DOCKER0, HEARTBEAT_S, LAN1, PEER_TIMEOUT_S, Lan, wait_for

MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def lan() -> Iterator[Lan]:
    """h1 serves the model (Ray inside its namespace); h2 and h3 are planners with a cache; h3 is
    also a bridge (its dashboard link must carry its LAN address, not docker0's)."""
    with Lan(3, docker0=True) as lan:
        lan.hosts[0].start("--roles", "planner,llm,cache", timeout=180)
        lan.hosts[1].start("--roles", "planner,cache")
        lan.hosts[2].start("--roles", "planner,cache,bridge")
        yield lan


def test_hosts_with_docker0_form_the_mesh_at_their_lan_addresses(lan: Lan) -> None:
    lan.wait_mesh(timeout=30)
    for host in lan.hosts:
        assert host.node.listening_address == f"{host.ip}:50051"  # not docker0's 172.17.0.1
        peers = {p.info.name: p for p in host.node.peers()}
        for other in lan.hosts:
            if other is host:
                continue
            row = peers[other.node.name]
            assert row.info.address == f"{other.ip}:50051"
            assert row.info.address.startswith(LAN1)
            assert f"{DOCKER0.split('/')[0]}:50051" in row.info.addresses  # announced, ranked last, unused


def test_the_bridge_hands_out_its_lan_address(lan: Lan) -> None:
    h3 = lan.hosts[2]
    line = next(x for x in h3.node.proc.output if " dashboard " in x)
    assert f"http://{h3.ip}:" in line  # what the dashboard link and the pairing QR code carry
    peers = {p.info.name: p for p in lan.hosts[0].node.peers()}
    assert peers["lan3"].info.http_url.startswith(f"http://{h3.ip}:")


def test_the_peers_command_lists_the_address_in_use_and_the_others(lan: Lan) -> None:
    out = lan.hosts[1].llmlab("peers", "--target", lan.hosts[1].target, timeout=60)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("lan1 "))
    assert f"{lan.hosts[0].ip}:50051" in line and "alive" in line and "also: 172.17.0.1:50051" in line


def test_an_ask_on_a_host_without_the_model_is_generated_on_another_host(lan: Lan) -> None:
    h1, h2 = lan.hosts[0], lan.hosts[1]
    wait_for(lambda: MODEL in next((p.info.models for p in h2.node.peers() if p.info.name == h1.node.name), []),
             60, what="h2 to see h1's model")
    query = planner_pb2.Query(text="Name a colour.", no_cache=True,
                              params={"max_tokens": 8, "temperature": 0.0})
    task = h2.node.call("/llmlab.v1.Planner/Ask", planner_pb2.AskRequest(query=query), planner_pb2.AskResponse,
                        timeout=240).task
    assert task.status == planner_pb2.TASK_STATUS_SUCCEEDED, task.error
    (step,) = task.steps
    assert step.kind == planner_pb2.STEP_KIND_LLM and step.node_name == h1.node.name and task.answer.strip()


def test_doctor_on_a_healthy_mesh_fails_nothing(lan: Lan) -> None:
    h2 = lan.hosts[1]
    out = h2.llmlab("doctor", "--target", h2.target, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["verdict"] == "ok", report
    assert "3 seen" in checks["reachable"]["detail"] and "no one-way" in checks["one-way"]["detail"]
    assert f"{MODEL} on lan1" in checks["models"]["detail"]


def test_a_partition_heals_and_the_mesh_reforms_within_two_peer_timeouts(lan: Lan) -> None:
    h1, rest = lan.hosts[0], lan.hosts[1:]
    lan.wait_mesh(timeout=30)
    lan.partition([h1], rest)
    try:
        wait_for(lambda: not h1.node.alive_peers() and all(h1.node.name not in h.node.alive_peers() for h in rest),
                 PEER_TIMEOUT_S + 10, what="both sides to drop the other",
                 describe=lambda: {h.name: h.node.peer_states() for h in lan.hosts})
        assert rest[0].node.alive_peers() == {rest[1].node.name}  # each side still whole
    finally:
        lan.heal()
    lan.wait_mesh(timeout=2 * PEER_TIMEOUT_S)


def test_a_sigkilled_host_leaves_every_table_within_the_peer_timeout(lan: Lan) -> None:
    lan.wait_mesh(timeout=30)
    victim, rest = lan.hosts[2], lan.hosts[:2]
    victim.node.kill()
    # The peer timeout, plus one heartbeat round for the sweep that notices it, plus polling.
    wait_for(lambda: all(victim.node.name not in h.node.peer_states() for h in rest),
             PEER_TIMEOUT_S + HEARTBEAT_S + 1.0, interval=0.05, what="the killed node to leave every table",
             describe=lambda: {h.name: h.node.peer_states() for h in rest})
