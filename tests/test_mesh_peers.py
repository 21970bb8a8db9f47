"""The peer table: joins, refreshes, leaves, timeouts, and a restart seen as leave + join."""

from __future__ import annotations

import time

from llmlab_grpc.mesh.peers import PeerTable
from llmlab_grpc.proto.llmlab.v1 import common_pb2


def info(node_id: str, started: int = 1000, address: str = "127.0.0.1:1") -> common_pb2.NodeInfo:
    return common_pb2.NodeInfo(node_id=node_id, name=node_id, address=address, roles=["replica"],
                               started_unix_ms=started)


def table_with_events() -> tuple[PeerTable, list[tuple[str, str, int]]]:
    table = PeerTable("me")
    events: list[tuple[str, str, int]] = []
    table.subscribe(lambda event, record: events.append((event, record.node_id, record.info.started_unix_ms)))
    return table, events


def test_join_refresh_leave() -> None:
    table, events = table_with_events()
    table.upsert(info("a"), "static")
    table.upsert(info("a"), "static")  # a refresh is not a join
    assert events == [("joined", "a", 1000)]
    assert table.upsert(info("me"), "static") is None  # never itself
    table.remove("a")
    assert events[-1] == ("left", "a", 1000) and len(table) == 0


def test_a_restarted_peer_leaves_and_joins_again() -> None:
    """Back before its old entry timed out, it still lost its memory: listeners must hear it."""
    table, events = table_with_events()
    table.upsert(info("a", started=1000), "static")
    table.upsert(info("a", started=2000, address="127.0.0.1:2"), "static")
    assert events == [("joined", "a", 1000), ("left", "a", 1000), ("joined", "a", 2000)]
    record = table.get("a")
    assert record is not None and record.address == "127.0.0.1:2"


def test_peers_without_a_start_time_are_never_taken_for_restarted() -> None:
    table, events = table_with_events()
    table.upsert(info("phone", started=0), "bridge")
    table.upsert(info("phone", started=0), "bridge")
    assert events == [("joined", "phone", 0)]


def test_silent_peers_expire() -> None:
    table, events = table_with_events()
    table.upsert(info("a"), "static")
    record = table.get("a")
    assert record is not None
    record.last_seen_mono = time.monotonic() - 10
    assert [r.node_id for r in table.expire(5.0)] == ["a"]
    assert events[-1][0] == "left" and "a" not in table


def test_heard_from_alone_is_not_alive_and_one_way_is_listed_but_never_routed() -> None:
    """Alive means callable: an inbound heartbeat proves existence, only our own call proves reachability."""
    table, events = table_with_events()
    table.heard(info("a"))
    assert table.all() == [] and table.to_protos() == [] and events == []  # heard, not yet tried
    table.mark_one_way("a", "our calls fail")
    (row,) = table.to_protos()
    assert row.state == common_pb2.PEER_STATE_ONE_WAY and row.detail == "our calls fail"
    assert table.all() == [] and table.with_role("replica") == []
    table.upsert(info("a"), "mdns")  # our call got through: routable, and listeners hear the join
    assert [r.node_id for r in table.with_role("replica")] == ["a"] and events == [("joined", "a", 1000)]
    table.mark_one_way("a", "it cannot reach us")
    assert table.all() == [] and events[-1] == ("left", "a", 1000)
