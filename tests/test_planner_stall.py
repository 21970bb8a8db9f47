"""A generation that never sends its first piece: the planner abandons that llm node in time.

Two real node processes, each serving model ``m1`` through the ``openai`` backend from its
own OpenAI-compatible server on loopback (tests/inference_fakes.py). The planner's own
llm node (tried first: this node first) talks to a server that accepts the request and
never answers; the other's server answers. Without the first-token deadline the ask
would sit until the backend's own timeout (``llm_timeout_s``, 120 s), past this test's
ask deadline. The same nodes (on the session's Ray head) show ``GetInfo.ray``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from llmlab_grpc.inference.ray_head import RayHead
from llmlab_grpc.procs import NodeProcess, spawn_node
from llmlab_grpc.proto.llmlab.v1 import node_pb2, node_pb2_grpc, planner_pb2, planner_pb2_grpc
from tests.conftest import ARTIFACTS, ray_env
from tests.helpers import wait_until
from tests.inference_fakes import FakeOpenAI

DEADLINE_S = 3
ASK_TIMEOUT_S = 60  # the hang guard: well under the stalled backend's own 120 s


@pytest.fixture(scope="module")
def stalled_mesh(ray_head: RayHead) -> Iterator[dict[str, Any]]:
    secret = secrets.token_urlsafe(24)
    ARTIFACTS.mkdir(exist_ok=True)
    env = {**ray_env(ray_head), "LLMLAB_CACHE_STORE": "memory"}
    with FakeOpenAI(["m1", "solo"], stall=True) as hung, FakeOpenAI(["m1"]) as working:
        asker = spawn_node("asker", secret, "--no-mdns", "--roles", "planner,llm", "--llm-backend", "openai",
                           "--openai-url", f"{hung.url}/v1", "--llm-models", "m1,solo",
                           "--first-token-timeout", str(DEADLINE_S), env=env, log_dir=ARTIFACTS, start_timeout=120)
        try:
            helper = spawn_node("helper", secret, "--no-mdns", "--roles", "llm", "--llm-backend", "openai",
                                "--openai-url", f"{working.url}/v1", "--llm-models", "m1", "--peer", asker.address,
                                env=env, log_dir=ARTIFACTS, start_timeout=120)
            try:
                wait_until(lambda: asker.peer_names() == {"helper"}, 20, what="the helper llm node")
                yield {"asker": asker, "helper": helper, "hung": hung, "working": working}
            finally:
                helper.stop()
        finally:
            asker.stop()


def ask(node: NodeProcess, text: str, model: str) -> planner_pb2.Task:
    query = planner_pb2.Query(text=text, model=model, no_cache=True, no_tools=True)
    return node.call(planner_pb2_grpc.PlannerStub, "Ask", planner_pb2.AskRequest(query=query),
                     timeout=ASK_TIMEOUT_S).task


def test_a_stalled_first_token_fails_over_and_the_trace_says_so(stalled_mesh: dict[str, Any]) -> None:
    task = ask(stalled_mesh["asker"], "hello there", "m1")
    assert task.answer == "echo: hello there"
    (step,) = task.steps
    assert step.node_name == "helper"
    assert list(step.failed_over) == ["asker"]
    assert f"llm node asker sent no first token within {DEADLINE_S} s (--first-token-timeout)" in step.reason
    assert any(r["path"] == "/v1/chat/completions" for r in stalled_mesh["hung"].requests)  # it was asked first


def test_when_the_only_llm_node_stalls_the_ask_fails_with_deadline_exceeded(stalled_mesh: dict[str, Any]) -> None:
    asker = stalled_mesh["asker"]
    with pytest.raises(grpc.RpcError) as err:
        ask(asker, "hello there", "solo")  # only the stalled node serves it
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert f"llm node asker sent no first token within {DEADLINE_S} s" in err.value.details()
    listed = asker.call(planner_pb2_grpc.PlannerStub, "ListTasks", planner_pb2.ListTasksRequest(limit=1))
    (step,) = listed.tasks[0].steps
    assert list(step.failed_over) == ["asker"] and "--first-token-timeout" in step.reason


def test_a_node_on_ray_reports_the_ray_node_its_driver_attached_to(stalled_mesh: dict[str, Any]) -> None:
    reply = stalled_mesh["asker"].call(node_pb2_grpc.NodeStub, "GetInfo", node_pb2.GetInfoRequest())
    assert reply.HasField("ray") and reply.ray.ray_node_ip == "127.0.0.1"
    assert reply.ray.on_this_machine and not reply.ray.own_cluster and reply.ray.ray_node_id
