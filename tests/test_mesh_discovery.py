"""Discovery and liveness: zeroconf on loopback, static seeds with gossip, departures, returns."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from tests.helpers import wait_until


def test_two_nodes_find_each_other_by_zeroconf_on_loopback(node_factory) -> None:  # type: ignore[no-untyped-def]
    a = node_factory("zc-a", "--roles", "cache,replica", "--mdns-interface", "127.0.0.1")
    b = node_factory("zc-b", "--roles", "cache,replica", "--mdns-interface", "127.0.0.1")
    wait_until(lambda: a.peer_names() == {"zc-b"} and b.peer_names() == {"zc-a"}, 20, what="zeroconf discovery")


def test_static_seeds_same_list_everywhere_and_gossip(node_factory) -> None:  # type: ignore[no-untyped-def]
    """One seed list for every node (its own address included) is fine; gossip finds the rest."""
    first = node_factory("seed", "--roles", "cache,replica", "--no-mdns")
    second = node_factory("second", "--roles", "cache,replica", "--no-mdns", "--peer", first.address)
    third = node_factory("third", "--roles", "cache,replica", "--no-mdns", "--peer", first.address)
    for node, others in ((first, {"second", "third"}), (second, {"seed", "third"}), (third, {"seed", "second"})):
        wait_until(lambda n=node, o=others: n.peer_names() == o, 15, what=f"{node.name} to see {others}")
    # A node given its own address as a seed ignores it.
    fourth = node_factory(
        "fourth", "--roles", "cache,replica", "--no-mdns", "--peer", first.address, "--peer", "127.0.0.1:1"
    )
    wait_until(lambda: fourth.peer_names() == {"seed", "second", "third"}, 15, what="fourth to join")


def test_own_address_among_seeds_is_ignored(node_factory) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node = node_factory(
        "selfseed", "--roles", "cache,replica", "--no-mdns", "--port", str(port), "--peer", f"127.0.0.1:{port}"
    )
    wait_until(lambda: node.peer_names() == set() and node.process.poll() is None, 3, what="a quiet node")


def test_sigterm_peer_leaves_by_goodbye(node_factory) -> None:  # type: ignore[no-untyped-def]
    """With a 60 s peer timeout, only the goodbye can remove the peer: it must, and quickly."""
    a = node_factory("stay", "--roles", "cache,replica", "--no-mdns", "--peer-timeout", "60")
    b = node_factory("leave", "--roles", "cache,replica", "--no-mdns", "--peer", a.address, "--peer-timeout", "60")
    wait_until(lambda: a.peer_names() == {"leave"}, 15, what="join")
    assert b.stop(signal.SIGTERM) == 0
    wait_until(lambda: a.peer_names() == set(), 10, what="the goodbye to remove the peer")


def test_sigkill_peer_times_out_and_restart_returns(node_factory) -> None:  # type: ignore[no-untyped-def]
    a = node_factory("watcher", "--roles", "cache,replica", "--no-mdns")
    b = node_factory("victim", "--roles", "cache,replica", "--no-mdns", "--peer", a.address)
    wait_until(lambda: a.peer_names() == {"victim"}, 15, what="join")
    b.stop(signal.SIGKILL)
    wait_until(lambda: a.peer_names() == set(), 15, what="missed heartbeats to remove the killed peer")
    node_factory("victim", "--roles", "cache,replica", "--no-mdns", "--peer", a.address)
    wait_until(lambda: a.peer_names() == {"victim"}, 15, what="the restarted peer to come back")


def test_zeroconf_peer_restart_comes_back(node_factory) -> None:  # type: ignore[no-untyped-def]
    a = node_factory("zr-a", "--roles", "cache,replica", "--mdns-interface", "127.0.0.1")
    b = node_factory("zr-b", "--roles", "cache,replica", "--mdns-interface", "127.0.0.1")
    wait_until(lambda: a.peer_names() == {"zr-b"}, 20, what="discovery")
    b.stop(signal.SIGTERM)
    wait_until(lambda: a.peer_names() == set(), 10, what="departure")
    node_factory("zr-b", "--roles", "cache,replica", "--mdns-interface", "127.0.0.1")
    wait_until(lambda: a.peer_names() == {"zr-b"}, 20, what="return")


def test_node_stops_cleanly_on_sigint(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory("ctrlc", "--roles", "cache,replica", "--no-mdns")
    assert node.stop(signal.SIGINT) == 0


def test_peer_table_json_shape(node_factory, secret, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = node_factory("shape-a", "--roles", "cache,replica", "--no-mdns")
    node_factory("shape-b", "--roles", "cache,replica", "--no-mdns", "--peer", a.address)
    wait_until(lambda: a.peer_names() == {"shape-b"}, 15, what="join")
    out = subprocess.run(
        [sys.executable, "-m", "llmlab_grpc", "peers", "--json", "--target", a.address, "--secret", secret],
        capture_output=True,
        text=True,
        timeout=30,
        env={"LLMLAB_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {r["name"] for r in rows} == {"shape-a", "shape-b"}
    for row in rows:
        assert set(row) == {"name", "node_id", "address", "addresses", "roles", "state", "last_seen", "detail"}
        assert row["roles"] == ["cache", "replica"]
    assert {r["state"] for r in rows} == {"self", "alive"}
