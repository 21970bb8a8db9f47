"""ListTasks in pages from a real planner node, and the clients that follow the pages (issue 16)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import grpc
import pytest

from llmlab_grpc.config import NodeSettings
from llmlab_grpc.limits import max_request_bytes
from llmlab_grpc.proto.llmlab.v1 import common_pb2, planner_pb2, planner_pb2_grpc
from tests.bridge_support import get_json, http_url
from tests.helpers import NodeProcess


@pytest.mark.timeout(180)
def test_tasks_page_and_every_client_follows(node_factory: Callable[..., NodeProcess], secret: str) -> None:
    node = node_factory("pager", "--no-mdns", "--roles", "planner,tools,bridge", "--tools", "calculator")
    stub = planner_pb2_grpc.PlannerStub

    def ask(query: planner_pb2.Query) -> planner_pb2.Task:
        return node.call(stub, "Ask", planner_pb2.AskRequest(query=query), timeout=30).task

    for i in range(4):
        ask(planner_pb2.Query(text=f"What is {i} + 2?"))
    long_history = [common_pb2.ChatMessage(role="user", content="x" * 60_000) for _ in range(60)]  # 3.6 MB
    big = ask(planner_pb2.Query(text="What is 1 + 1?", history=long_history))
    assert big.query_truncated and len(big.query_sha256) == 64 and big.ByteSize() < 64 * 1024
    with pytest.raises(grpc.RpcError) as err:  # the 64 turns x 240 KB: refused by gRPC before it is buffered
        ask(planner_pb2.Query(text="hi", history=[common_pb2.ChatMessage(role="user", content="x" * 240 * 1024)] * 64))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"vs. {max_request_bytes(NodeSettings())}" in (err.value.details() or "")  # names the node's limit

    first = node.call(stub, "ListTasks", planner_pb2.ListTasksRequest(page_size=2))
    assert first.tasks[0].task_id == big.task_id and len(first.tasks) == 2 and first.next_page_token
    rest = node.call(stub, "ListTasks", planner_pb2.ListTasksRequest(page_size=10, page_token=first.next_page_token))
    assert len(rest.tasks) == 3 and not rest.next_page_token
    with pytest.raises(grpc.RpcError) as bad:
        node.call(stub, "ListTasks", planner_pb2.ListTasksRequest(page_token="nonsense"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    cli = subprocess.run([sys.executable, "-m", "llmlab_grpc", "tasks", "--limit", "4", "--json", "--target",
                          node.address], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "LLMLAB_MESH_SECRET": secret})
    assert cli.returncode == 0, cli.stderr
    assert len(json.loads(cli.stdout)) == 4
    status, body = get_json(f"{http_url(node)}/api/tasks?limit=5")
    assert status == 200 and len(body["tasks"]) == 5 and body["tasks"][0]["task_id"] == big.task_id
