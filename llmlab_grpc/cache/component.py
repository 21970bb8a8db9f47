"""The ``cache`` role: a ``CacheManager``, its gRPC service, a sweeper, stats in heartbeats.

The manager is built when the node builds its components, on the event loop's (main)
thread: with the ``ray`` store that starts Ray, which must happen on the main thread
(Ray ties the local cluster's processes to the thread that started them). Other
components of the same process reach the cache in-process, no gRPC hop, through the ports
the node hands them (``assembly.py``): the planner ``service`` (``ports.PlannerCache``),
the bridge ``manager`` (``ports.CacheEvents``); the node reads ``manager.stats_proto``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from llmlab_grpc.cache.manager import CacheManager
from llmlab_grpc.cache.semantic import SemanticCache
from llmlab_grpc.cache.service import CacheService, add_to_server
from llmlab_grpc.metrics.collectors import CacheCollector, SemanticCollector
from llmlab_grpc.proto.llmlab.v1 import cache_pb2
from llmlab_grpc.roles import RoleComponent, ServiceBinding

if TYPE_CHECKING:
    from llmlab_grpc.config import NodeSettings
    from llmlab_grpc.metrics import NodeMetrics

log = logging.getLogger(__name__)


def sweep_interval_s(ttl_s: float) -> float:
    """Often enough that expired bytes do not linger, rarely enough to cost nothing."""
    return min(60.0, max(1.0, ttl_s / 4))


class CacheComponent(RoleComponent):
    """Owns the node's cache for the life of the process."""

    def __init__(self, settings: NodeSettings, node_id: str, metrics: NodeMetrics) -> None:
        self.manager = CacheManager.from_settings(settings, node_id=node_id)
        self.service = CacheService(self.manager, node_id)
        self.semantic = SemanticCache(self.manager, node_id, settings.semantic_min_similarity,
                                      threads=settings.semantic_embed_threads)
        self.service.semantic = self.semantic
        metrics.add(CacheCollector.of(self.manager))
        metrics.add(SemanticCollector(self.semantic.stats))
        self._sweeper: asyncio.Task[None] | None = None

    def bindings(self) -> list[ServiceBinding]:
        full_name = cache_pb2.DESCRIPTOR.services_by_name["Cache"].full_name
        return [ServiceBinding(full_name, self.service, add_to_server)]

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="cache-sweeper")
        log.info("cache ready: store=%s ttl=%gs max_bytes=%d max_entries=%d", self.manager.store.name,
                 self.manager.ttl_s, self.manager.max_bytes, self.manager.max_entries)

    async def _sweep_forever(self) -> None:
        interval = sweep_interval_s(self.manager.ttl_s)
        while True:
            await asyncio.sleep(interval)
            try:
                swept = self.manager.sweep()
                if swept:
                    log.debug("cache sweep reclaimed %d expired entries", swept)
            except Exception:  # a bug here must not end sweeping for good
                log.exception("cache sweep failed")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self.manager.close()
        self.semantic.close()

