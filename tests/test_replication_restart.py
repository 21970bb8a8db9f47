"""A replica node killed and restarted before its peer timeout is still re-synced.

The restarted process announces a new start time; peers treat that as leave + join, so
primaries sync it with the entries it should hold, although it never left their tables.
"""

from __future__ import annotations

import signal

from llmlab_grpc.proto.llmlab.v1 import cache_pb2, cache_pb2_grpc, replica_pb2, replica_pb2_grpc
from tests.helpers import wait_until

ENTRIES = 20
SLOW_TIMEOUT = ("--peer-timeout", "60", "--heartbeat-interval", "0.3")


def test_fast_restart_is_resynced(node_factory) -> None:  # type: ignore[no-untyped-def]
    roles = ("--roles", "cache,replica", "--no-mdns", *SLOW_TIMEOUT)
    first = node_factory("rs-1", *roles)
    second = node_factory("rs-2", *roles, "--peer", first.address)
    third = node_factory("rs-3", *roles, "--peer", first.address)
    wait_until(lambda: first.peer_names() == {"rs-2", "rs-3"}, 20, what="the mesh")

    keys = []
    for i in range(ENTRIES):
        request = cache_pb2.PutRequest(lookup=cache_pb2.CacheLookup(prompt=f"question {i}", model="m"),
                                       response=f"answer {i}")
        keys.append(first.call(cache_pb2_grpc.CacheStub, "Put", request).key)

    def held_by(node) -> int:  # type: ignore[no-untyped-def]
        return sum(node.call(replica_pb2_grpc.ReplicaStub, "Fetch", replica_pb2.FetchRequest(key=k)).found
                   for k in keys)

    wait_until(lambda: held_by(third) == ENTRIES, 20, what="the entries to reach rs-3")
    third.stop(signal.SIGKILL)
    reborn = node_factory("rs-3", *roles, "--peer", first.address)
    assert "rs-3" in first.peer_names()  # it never timed out of the table (60 s)
    wait_until(lambda: held_by(reborn) == ENTRIES, 30, what="the restarted node to be synced")
    assert held_by(second) == ENTRIES
