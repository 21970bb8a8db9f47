"""``llmlab metrics``: one node's Prometheus metrics, read over gRPC (``Node.GetMetrics``).

Works for every node, whatever its roles (``/metrics`` over HTTP needs the bridge role).
``--grep WORD`` keeps the lines that contain WORD (e.g. ``cache``); ``--json`` prints the samples
as a list of ``{name, labels, value}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import grpc

from llmlab_grpc.client import MeshClient, describe_rpc_error
from llmlab_grpc.proto.llmlab.v1 import node_pb2, node_pb2_grpc

TIMEOUT_S = 10.0


def samples(text: str) -> list[dict[str, Any]]:
    """The samples of a text exposition, in order."""
    from prometheus_client.parser import text_string_to_metric_families

    return [{"name": s.name, "labels": dict(s.labels), "value": s.value}
            for family in text_string_to_metric_families(text) for s in family.samples]


def cmd_metrics(args: argparse.Namespace) -> int:
    client = MeshClient.from_args(args)
    try:
        reply = node_pb2_grpc.NodeStub(client.channel).GetMetrics(
            node_pb2.GetMetricsRequest(), metadata=client.metadata, timeout=TIMEOUT_S)
    except grpc.RpcError as err:
        print(describe_rpc_error(err, client.target), file=sys.stderr)
        return 1
    finally:
        client.close()
    word = args.grep or ""
    if args.json:
        print(json.dumps([s for s in samples(reply.text) if word in s["name"]], indent=2))  # --grep: by name
        return 0
    for line in reply.text.splitlines():
        if word in line:
            print(line)
    return 0


def add_commands(subparsers: Any, add_client_flags: Callable[[argparse.ArgumentParser], None]
                 ) -> dict[str, Callable[[argparse.Namespace], int]]:
    parser = subparsers.add_parser("metrics", help="print a node's Prometheus metrics (Node.GetMetrics)")
    add_client_flags(parser)
    parser.add_argument("--grep", metavar="WORD", help="only the lines that contain WORD, e.g. cache")
    return {"metrics": cmd_metrics}
