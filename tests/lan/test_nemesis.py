"""Nemesis tests (issue 12): faults on a LAN of three hosts, then a check that nothing acknowledged
was lost, nothing deleted or expired came back, and every entry is on N+1 = 3 nodes again.

One LAN for the module (light nodes: cache + replica, memory store, 1.5 s peer timeout,
anti-entropy every 2 s); one ``Checker`` records every write and delete of every test, so
each convergence check covers all that came before too. Short versions: a few dozen writes
per fault.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.lan.harness import Lan, LanNode, wait_for
from tests.lan.nemesis import FAST_FLAGS, Checker

pytestmark = pytest.mark.timeout(240)
PEER_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def lan() -> Iterator[Lan]:
    with Lan(3, tag="nm") as lan:
        first = lan.hosts[0].start(*FAST_FLAGS)
        for host in lan.hosts[1:]:
            host.start(*FAST_FLAGS, "--peer", first.target)
        lan.wait_mesh(timeout=30)
        yield lan


@pytest.fixture(scope="module")
def checker(lan: Lan) -> Checker:
    return Checker(lan)


def nodes(lan: Lan) -> list[LanNode]:
    return [h.node for h in lan.hosts]


def write(checker: Checker, node: LanNode, tag: str, count: int) -> int:
    """``count`` puts of fresh keys through ``node``; returns how many were acknowledged."""
    return sum(checker.put(node, f"{tag} {i}", f"{tag} value {i}") for i in range(count))


def heal_and_check(lan: Lan, checker: Checker) -> float:
    lan.heal()
    lan.wait_mesh(timeout=30)
    return checker.wait_converged(nodes(lan), timeout=60)


def test_writes_and_deletes_survive_a_sigkill_and_a_restart_with_an_empty_cache(lan: Lan, checker: Checker) -> None:
    h1, h2, h3 = lan.hosts
    assert write(checker, h1.node, "before kill", 15) == 15
    # Entries h3 is the primary of: after its restart they come back to it from the replicas.
    assert write(checker, h3.node, "primary h3", 5) == 5
    victim = h3.node
    victim.kill()
    acked = write(checker, h1.node, "during kill", 10)
    assert acked == 10, "two nodes alive: W=2 is reachable"
    for key in list(checker.acked)[:5]:
        assert checker.delete(h2.node, key)
    h3.start(*FAST_FLAGS, "--peer", h1.target)  # the same node, its memory cache empty
    heal_and_check(lan, checker)
    assert checker.counts["wrong_reads"] == 0


def test_a_node_paused_longer_than_the_peer_timeout_catches_up(lan: Lan, checker: Checker) -> None:
    h1, h2, _ = lan.hosts
    h2.node.pause()
    try:
        wait_for(lambda: h2.node.name not in h1.node.alive_peers(), 15, what="the paused node to be dropped")
        write(checker, h1.node, "during pause", 10)
        for key in list(checker.acked)[5:8]:
            assert checker.delete(h1.node, key)
        time.sleep(PEER_TIMEOUT_S)
    finally:
        h2.node.resume()
    heal_and_check(lan, checker)


def test_a_partition_2_1_then_heal(lan: Lan, checker: Checker) -> None:
    h1, h2, h3 = lan.hosts
    lan.partition([h1, h2], [h3])
    wait_for(lambda: h3.node.alive_peers() == set(), 15, what="h3 cut off")
    majority = write(checker, h1.node, "majority side", 10)
    assert majority == 10
    minority = write(checker, h3.node, "minority side", 5)  # h3 alone: short of W=2, not acknowledged
    assert minority == 0 and checker.counts["partial"] >= 5
    for key in [k for k in checker.acked if k not in checker.deleted][:3]:
        assert checker.delete(h2.node, key)  # h3 holds these and misses the delete
    heal_and_check(lan, checker)


def test_a_partition_1_1_1_then_heal(lan: Lan, checker: Checker) -> None:
    h1, h2, h3 = lan.hosts
    lan.partition([h1], [h2, h3])
    lan.partition([h2], [h3])
    wait_for(lambda: all(h.node.alive_peers() == set() for h in lan.hosts), 15, what="three islands")
    for host in (h1, h2, h3):
        write(checker, host.node, f"island {host.name}", 3)
    victims = [k for k in checker.acked if k not in checker.deleted][:3]
    for key in victims:
        checker.delete(h1.node, key)  # only h1 hears it; the others must not bring the entries back
    heal_and_check(lan, checker)


def test_twenty_percent_packet_loss(lan: Lan, checker: Checker) -> None:
    for host in lan.hosts:
        host.loss(20)
    h1, h2, _ = lan.hosts
    for i in range(20):
        node = h1.node if i % 2 else h2.node
        if not checker.put(node, f"lossy {i}", f"lossy value {i}"):
            checker.put(node, f"lossy {i}", f"lossy value {i}")  # a client retries what was not acknowledged
    for key in [k for k in checker.acked if k not in checker.deleted][:3]:
        checker.delete(h1.node, key)
    heal_and_check(lan, checker)
    assert checker.counts["acked"] > 0 and checker.counts["wrong_reads"] == 0
    assert all(node.alive() for node in nodes(lan)), "no node crashed under the nemesis"
