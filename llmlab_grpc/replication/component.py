"""The ``replica`` role: the ``Replica`` service plus the node's ``Replicator``.

With the ``cache`` role on the same node (the usual case), copies live in that cache's
``CacheManager`` and this role also replicates the cache's own puts (a listener on its
change hooks), answers ``Cache.Get(read_through=True)`` from replicas on a local miss and
reports the replication shortfall in the cache's statistics (the replicator attached as
the cache's ``PeerSource``, ``cache/hooks.py``). Without it, the role keeps copies in
a ``CacheManager`` of its own, built from the same ``cache_*`` settings (same TTL and
byte budget), and its statistics go out in heartbeats. The node hands it the cache role's
manager when there is one (``assembly.py``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from llmlab_grpc.cache.manager import CacheManager
from llmlab_grpc.metrics.collectors import CacheCollector, ReplicationCollector
from llmlab_grpc.proto.llmlab.v1 import replica_pb2, replica_pb2_grpc
from llmlab_grpc.replication.replicator import Replicator
from llmlab_grpc.replication.service import ReplicaService
from llmlab_grpc.roles import RoleComponent, ServiceBinding

if TYPE_CHECKING:
    from llmlab_grpc.config import NodeSettings
    from llmlab_grpc.mesh.channels import ChannelPool
    from llmlab_grpc.mesh.peers import PeerTable
    from llmlab_grpc.metrics import NodeMetrics
    from llmlab_grpc.ports import LocalNode

log = logging.getLogger(__name__)


class ReplicaComponent(RoleComponent):
    """Owns the node's replicator for the life of the process."""

    def __init__(self, settings: NodeSettings, me: LocalNode, peers: PeerTable, channels: ChannelPool,
                 metrics: NodeMetrics, cache: CacheManager | None) -> None:
        self.me = me
        self._own: CacheManager | None = None
        if cache is None:
            cache = self._own = CacheManager.from_settings(settings, node_id=me.node_id)
        self.manager = cache
        """The cache role's manager on this node, else this role's own (copies live there)."""
        self.replicator = Replicator(
            cache, me.node_id, peers, channels,
            replica_count=settings.replica_count, queue_size=settings.replication_queue,
            retry_s=settings.replication_retry_s, write_acks=settings.write_acks_count,
            anti_entropy_s=settings.anti_entropy_s, self_name=settings.name,
        )
        self.replicator.started_unix_ms = me.started_unix_ms
        self.service = ReplicaService(self.replicator)
        metrics.add(ReplicationCollector(self.replicator.stats))
        if self._own is not None:  # copies kept without the cache role: export that cache too
            metrics.add(CacheCollector.of(self._own))

    @property
    def own_cache(self) -> CacheManager | None:
        """The cache this role keeps its copies in when the node has no cache role (its stats go in heartbeats)."""
        return self._own

    def bindings(self) -> list[ServiceBinding]:
        full_name = replica_pb2.DESCRIPTOR.services_by_name["Replica"].full_name
        return [ServiceBinding(full_name, self.service, replica_pb2_grpc.add_ReplicaServicer_to_server)]

    async def start(self) -> None:
        self.replicator.self_address = self.me.address
        self.replicator.start()
        # The cache's read-through and write acks (cache/hooks.py); its change hooks the replicator subscribed to.
        self.manager.attach_peer_source(self.replicator)
        log.info("replica ready: N=%d replicas per entry, queue %d, retry every %gs", self.replicator.replica_count,
                 self.replicator.queue.maxsize, self.replicator.retry_s)

    async def stop(self) -> None:
        await self.replicator.stop()
        self.manager.attach_peer_source(None)
        if self._own is not None:
            self._own.close()

