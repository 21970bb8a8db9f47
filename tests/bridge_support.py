"""Helpers of the bridge tests: a bridge node's URLs, pairing tokens, async polling."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import grpc

from llmlab_grpc.procs import NodeProcess
from llmlab_grpc.proto.llmlab.v1 import common_pb2, node_pb2, node_pb2_grpc

DASHBOARD_RE = re.compile(r"^llmlab node (?P<name>\S+) dashboard (?P<url>\S+)/llmlab$")


def http_url(node: NodeProcess) -> str:
    """The bridge node's base URL, from the line it prints before ``listening on``."""
    for line in node.output:
        match = DASHBOARD_RE.match(line.strip())
        if match:
            return match.group("url")
    raise AssertionError(f"node {node.name} printed no dashboard line: {node.output}")


def peers_of(node: NodeProcess) -> dict[str, common_pb2.Peer]:
    """node id -> the row ``node`` shows in ``ListPeers`` (empty when the call fails: polled by ``eventually``)."""
    try:
        reply = node.call(node_pb2_grpc.NodeStub, "ListPeers", node_pb2.ListPeersRequest(), timeout=2.0)
    except grpc.RpcError:
        return {}
    return {p.info.node_id: p for p in reply.peers}


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def pairing_token(base: str) -> str:
    status, body = get_json(f"{base}/api/pairing")
    assert status == 200, body
    return str(body["token"])


async def eventually(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """``wait_until`` for async tests: polls without blocking the event loop (clients keep beating)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(predicate)
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what} (last value: {last!r})")
