"""``NodeMetrics``: the registry of one node and the series recorded as things happen.

Each node has its own ``CollectorRegistry``, never prometheus_client's global default,
so several nodes in one process (tests, benchmarks) keep separate figures, and a node
exports nothing it did not register. Two kinds of series:

* recorded on the spot (counters, histograms): gRPC calls (``calls.instrument``),
  generations and their tokens (the llm role);
* read when scraped (``collectors.py``): cache counters and sizes, replication queue
  and shortfall, peers by state, the node's load. Those parts already keep their
  figures, so the hot paths (a cache hit) pay nothing for metrics.

Label values come only from bounded sets: registered gRPC methods, status codes,
served models, peer states and cache namespaces.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from llmlab_grpc.metrics.call_series import CallSeries

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The text exposition format's media type (``text/plain; version=0.0.4``)."""

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 120.0, 300.0)
"""From a cache hit (well under a millisecond) to a long generation (minutes)."""

SPEED_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 35.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0)
"""Tokens per second of one generation: a slow CPU to a fast GPU."""

SPEED_EWMA_WEIGHT = 0.3
"""Weight of the newest generation in a model's smoothed tokens/s (the planner reads this figure)."""


class NodeMetrics:
    """Every series one node exports; ``exposition()`` renders them in the text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.grpc_calls = CallSeries(LATENCY_BUCKETS)
        r.register(self.grpc_calls)
        self.tokens = Counter("llmlab_tokens_generated", "Completion tokens generated on this node, by model",
                              ["model"], registry=r)
        self.prompt_tokens = Counter("llmlab_prompt_tokens", "Prompt tokens read by this node's models, by model",
                                     ["model"], registry=r)
        self.generations = Counter("llmlab_generations", "Generations finished on this node, by model and outcome",
                                   ["model", "outcome"], registry=r)
        self.generation_seconds = Histogram(
            "llmlab_generation_duration_seconds", "Time from admission to the last token of a generation, by model",
            ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.generation_speed = Histogram(
            "llmlab_generation_tokens_per_second", "Decoding speed of each generation (first to last token), by model",
            ["model"], buckets=SPEED_BUCKETS, registry=r)
        self.speed = Gauge("llmlab_model_tokens_per_second",
                           f"Smoothed decoding speed of a model here (EWMA, newest weight {SPEED_EWMA_WEIGHT})",
                           ["model"], registry=r)
        self._speeds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, collector: Collector) -> None:
        """Register a pull-time collector (a role's figures, read at each scrape)."""
        self.registry.register(collector)

    def remove(self, collector: Collector) -> None:
        self.registry.unregister(collector)

    # -- generations ------------------------------------------------------------------------------

    def generation_done(self, model: str, prompt_tokens: int, completion_tokens: int, seconds: float,
                        decode_seconds: float, outcome: str = "ok") -> None:
        """Record one finished generation; ``decode_seconds`` runs from its first to its last token."""
        self.generations.labels(model, outcome).inc()
        if outcome != "ok":
            return
        self.tokens.labels(model).inc(max(0, completion_tokens))
        self.prompt_tokens.labels(model).inc(max(0, prompt_tokens))
        self.generation_seconds.labels(model).observe(max(0.0, seconds))
        if completion_tokens > 1 and decode_seconds > 0:
            speed = (completion_tokens - 1) / decode_seconds  # the first token is prompt work, not decoding
            self.generation_speed.labels(model).observe(speed)
            with self._lock:
                old = self._speeds.get(model)
                new = speed if old is None else SPEED_EWMA_WEIGHT * speed + (1 - SPEED_EWMA_WEIGHT) * old
                self._speeds[model] = new
            self.speed.labels(model).set(new)

    def tokens_per_second(self, models: Iterable[str] | None = None) -> float:
        """Smoothed decoding speed, the mean over ``models`` (all measured ones by default); 0 when unmeasured."""
        wanted = None if models is None else set(models)
        with self._lock:
            speeds = [v for k, v in self._speeds.items() if wanted is None or k in wanted]
        return sum(speeds) / len(speeds) if speeds else 0.0

    # -- exposition -------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """All series in the Prometheus text format (what ``/metrics`` and ``Node.GetMetrics`` answer)."""
        return generate_latest(self.registry)
