"""Replication of cache entries: rendezvous placement, the ``Replicator``, the ``Replica`` service.

In-process use (the node's ``replica`` role builds all of this)::

    replicator = node.components["replica"].replicator
    acked = await replicator.replicate(key, entry)        # node ids holding a copy now
    replicator.get_replicas(key)                          # as acknowledged, live ones only
    await replicator.sync_to_node(node_id, [key, ...])    # Replica.Sync, resumable
    found = await replicator.read_through(key)            # (entry, node_id) or None, verified

See docs/replication.md for the protocol and its limits.
"""

from __future__ import annotations

from llmlab_grpc.replication.integrity import RefusedCopy, verify_copy
from llmlab_grpc.replication.placement import place, rank
from llmlab_grpc.replication.replicator import Location, Replicator

__all__ = ["Location", "RefusedCopy", "Replicator", "place", "rank", "verify_copy"]
