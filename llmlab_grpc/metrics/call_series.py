"""``CallSeries``: the gRPC call counters and latency histograms, kept as plain numbers.

Every call a node serves updates them, so they are kept the cheapest way: per method a dict
of counts by status code, a list of bucket counts and a sum, updated on the event loop's
thread with no lock (prometheus_client's ``Counter``/``Histogram`` take a lock per value, three
a call: about 15k instructions of the ~20k that counting a call cost). They are turned into
the same series when scraped: ``llmlab_grpc_requests_total{service,method,code}`` and
``llmlab_grpc_request_duration_seconds_{bucket,count,sum}{service,method}``.

A scrape from another thread may see a call half counted (its bucket but not yet its code);
the histogram's count is the sum of its buckets, so each family stays consistent in itself.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

REQUESTS_HELP = "gRPC calls served, by service, method and final status code"
LATENCY_HELP = "Time to serve a gRPC call (a streamed call: until its last message), by service and method"


class MethodCalls:
    """One method's figures; ``record`` is all a call pays."""

    __slots__ = ("_bounds", "buckets", "codes", "total_s")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf only)
        self.codes: dict[str, int] = {}
        self.total_s = 0.0

    def record(self, seconds: float, code: str) -> None:
        self.buckets[bisect.bisect_left(self._bounds, seconds)] += 1  # a value on a bound counts in it (le)
        self.total_s += seconds
        self.codes[code] = self.codes.get(code, 0) + 1


class CallSeries(Collector):
    """All methods' figures; registered in the node's registry and rendered at each scrape."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self._bounds = tuple(sorted(buckets))
        self._methods: dict[tuple[str, str], MethodCalls] = {}

    def method(self, service: str, name: str) -> MethodCalls:
        """The figures of ``service``/``name`` (made on first use: only methods a node serves are asked)."""
        calls = self._methods.get((service, name))
        if calls is None:
            calls = self._methods[(service, name)] = MethodCalls(self._bounds)
        return calls

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("llmlab_grpc_requests", REQUESTS_HELP, labels=["service", "method", "code"])
        latency = HistogramMetricFamily("llmlab_grpc_request_duration_seconds", LATENCY_HELP,
                                        labels=["service", "method"])
        les = [repr(float(b)) for b in self._bounds] + ["+Inf"]  # "0.0005", "1.0": as prometheus_client writes them
        for (service, name), calls in sorted(self._methods.items()):
            for code, count in sorted(calls.codes.items()):
                requests.add_metric([service, name, code], count)
            cumulative = list(itertools.accumulate(list(calls.buckets)))
            latency.add_metric([service, name], buckets=list(zip(les, cumulative, strict=True)),
                               sum_value=calls.total_s)
        yield requests
        yield latency
