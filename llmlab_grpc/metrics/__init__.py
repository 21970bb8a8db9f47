"""Prometheus metrics of one node: its own registry, a wrapper timing each gRPC method, pull-time collectors.

``node.metrics`` (a ``NodeMetrics``) is what every part of a node records into; the
bridge serves it as ``GET /metrics`` and every node as ``Node.GetMetrics`` (what
``llmlab metrics --target`` reads). docs/metrics.md lists the series and a scrape config.
"""

from llmlab_grpc.metrics.calls import instrument
from llmlab_grpc.metrics.registry import CONTENT_TYPE, NodeMetrics

__all__ = ["CONTENT_TYPE", "NodeMetrics", "instrument"]
