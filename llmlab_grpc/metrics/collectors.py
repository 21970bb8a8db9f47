"""Collectors read at scrape time from the parts that already keep the figures.

Nothing here runs on a request path: a scrape calls ``collect`` and each collector reads
its source once (the cache's statistics take its lock for a dictionary copy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from llmlab_grpc.proto.llmlab.v1 import common_pb2

if TYPE_CHECKING:
    from llmlab_grpc.cache.manager import CacheManager

CACHE_COUNTERS = {
    "hits": "Lookups answered from the cache",
    "misses": "Lookups that found nothing usable",
    "puts": "Entries stored",
    "evictions": "Entries removed to respect the byte budget or the entry cap",
    "expirations": "Entries removed because their TTL ran out",
    "lost": "Entries dropped because the store lost their value",
}
CACHE_GAUGES = {
    "entries": "Entries held now",
    "bytes": "Bytes the cache holds now, every stored byte (prompt, params, response, metadata)",
}
STORE_FIGURES = {
    "store_hot_entries": "Ray store: values with an in-process copy",
    "store_hot_bytes": "Ray store: bytes of in-process copies of hot values",
    "store_hot_max_bytes": "Ray store: budget of in-process copies (--cache-hot-bytes)",
    "store_pending_writes": "Ray store: values waiting to be written to the object store",
    "store_write_failures": "Ray store: values the object store refused (kept in process)",
}
REPLICATION_GAUGES = {
    "queued": ("llmlab_replication_queue_depth", "Cache keys waiting to be replicated"),
    "shortfall": ("llmlab_replication_shortfall", "Entries this node is primary of with fewer than N live replicas"),
    "owned": ("llmlab_replication_owned", "Entries this node is primary of and tracks replicas for"),
}


class CacheCollector(Collector):
    """Counters and sizes of a cache, one series per namespace.

    ``stats`` returns ``{namespace: figures}`` (``CacheManager.stats_by_namespace``: at most 64
    namespaces, later ones together under ``_other``); ``totals`` the figures of the whole cache
    (limits, replica entries, the store's own ``store_*`` figures).
    """

    def __init__(self, stats: Callable[[], dict[str, dict[str, Any]]], totals: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats
        self._totals = totals

    @classmethod
    def of(cls, manager: CacheManager) -> CacheCollector:
        """The collector of a ``CacheManager``."""
        return cls(manager.stats_by_namespace, manager.get_stats)

    def collect(self) -> Iterator[Metric]:
        by_namespace = self._stats()
        for name, text in CACHE_COUNTERS.items():
            family = CounterMetricFamily(f"llmlab_cache_{name}", text, labels=["namespace"])
            for namespace, stats in by_namespace.items():
                family.add_metric([namespace], float(stats.get(name, 0)))
            yield family
        for name, text in CACHE_GAUGES.items():
            gauge = GaugeMetricFamily(f"llmlab_cache_{name}", text, labels=["namespace"])
            for namespace, stats in by_namespace.items():
                gauge.add_metric([namespace], float(stats.get(name, 0)))
            yield gauge
        totals = self._totals()
        yield GaugeMetricFamily("llmlab_cache_max_bytes", "The cache's byte budget", value=totals["max_bytes"])
        yield GaugeMetricFamily("llmlab_cache_max_entries", "The cache's entry cap", value=totals["max_entries"])
        yield GaugeMetricFamily("llmlab_cache_replica_entries", "Entries held as replicas for other nodes",
                                value=totals.get("replica_entries", 0))
        yield GaugeMetricFamily("llmlab_cache_wire_bytes", "Bytes of hot entries kept serialized for Cache.Get "
                                "hits, within the byte budget with the entries", value=totals.get("wire_bytes", 0))
        for name, figure in sorted(totals.items()):
            if name.startswith("store_"):  # the value store's own figures (Ray store: hot copies, pending writes)
                yield GaugeMetricFamily(f"llmlab_cache_{name}", STORE_FIGURES.get(name, name), value=figure)


class SemanticCollector(Collector):
    """The semantic cache's lookups, hits (here or from a peer), guard refusals and index size
    (``SemanticCache.stats``)."""

    def __init__(self, stats: Callable[[], dict[str, int]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield CounterMetricFamily("llmlab_semantic_lookups", "Semantic lookups that embedded their question",
                                  value=stats["lookups"])
        hits = CounterMetricFamily("llmlab_semantic_hits", "Semantic hits, by where the entry was held",
                                   labels=["source"])
        hits.add_metric(["local"], float(stats["hits"] - stats["peer_hits"]))
        hits.add_metric(["peer"], float(stats["peer_hits"]))
        yield hits
        yield CounterMetricFamily("llmlab_semantic_refused", "Candidates at or above the threshold the guard (or a "
                                  "max age) refused", value=stats["refused"])
        yield CounterMetricFamily("llmlab_semantic_peer_searches", "Lookups with no match here that asked the peers",
                                  value=stats["peer_searches"])
        yield GaugeMetricFamily("llmlab_semantic_index_entries", "Entries in this node's semantic index",
                                value=stats["index_entries"])


class ReplicationCollector(Collector):
    """The replicator's queue depth, shortfall and event counters (``Replicator.stats``)."""

    def __init__(self, stats: Callable[[], dict[str, int]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        for key, (name, text) in REPLICATION_GAUGES.items():
            yield GaugeMetricFamily(name, text, value=float(stats.get(key, 0)))
        events = CounterMetricFamily("llmlab_replication_events", "Replication events by kind (replicated, "
                                     "copies_stored, repaired, synced, ...)", labels=["event"])
        for key, value in sorted(stats.items()):
            if key not in REPLICATION_GAUGES:
                events.add_metric([key], float(value))
        yield events


def _state_name(state: int) -> str:
    return common_pb2.PeerState.Name(state).removeprefix("PEER_STATE_").lower()


class NodeCollector(Collector):
    """Who the node is, its load, and its peers by state (every state listed, 0 when none)."""

    def __init__(self, info: Callable[[], common_pb2.NodeInfo], load: Callable[[], common_pb2.NodeLoad],
                 peers: Callable[[], list[common_pb2.Peer]]) -> None:
        self._info = info
        self._load = load
        self._peers = peers

    def collect(self) -> Iterator[Metric]:
        info = self._info()
        yield InfoMetricFamily("llmlab_node", "This node", value={
            "node_id": info.node_id, "name": info.name, "version": info.version, "roles": ",".join(info.roles)})
        load = self._load()
        yield GaugeMetricFamily("llmlab_load_in_flight", "Requests being served", value=load.in_flight)
        yield GaugeMetricFamily("llmlab_load_tools_running", "Tool executions running", value=load.tools_running)
        yield GaugeMetricFamily("llmlab_load_generations_running", "Generations running or queued",
                                value=load.generations_running)
        counts = {_state_name(v): 0 for k, v in common_pb2.PeerState.items() if v != 0}
        for peer in self._peers():
            name = _state_name(peer.state)
            counts[name] = counts.get(name, 0) + 1
        family = GaugeMetricFamily("llmlab_peers", "Peers in this node's table, by state", labels=["state"])
        for name, count in sorted(counts.items()):
            family.add_metric([name], float(count))
        yield family
