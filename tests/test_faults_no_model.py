"""Cached answers with no model alive (issue 12, item 1), on real node processes.

Only ``nm-1`` serves the model. A question asked through it is replicated to ``nm-2``
and ``nm-3``; ``nm-1`` is SIGKILLed; once both survivors have dropped it, the same
question through either survivor (gRPC ``Planner.Ask``, and ``/v1`` on ``nm-3``) is a
cache hit, byte for byte the first answer, and a new question is UNAVAILABLE (503 on
``/v1``) naming the offline model.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest

from llmlab_grpc.cache.keys import cache_key
from llmlab_grpc.mesh.known_models import KnownModels
from llmlab_grpc.planner.planner import effective_params
from llmlab_grpc.proto.llmlab.v1 import node_pb2, node_pb2_grpc, planner_pb2, planner_pb2_grpc
from tests.helpers import NodeProcess, wait_until
from tests.test_replication_mesh import holds, wait_for_mesh, wait_gone

MODEL = "smollm2-135m"
FLAGS = ("--no-mdns", "--cache-store", "memory", "--heartbeat-interval", "0.3", "--peer-timeout", "1.5",
         "--replication-retry", "0.5")
PARAMS = {"max_tokens": 24}
Factory = Callable[..., NodeProcess]


def ask(node: NodeProcess, text: str) -> planner_pb2.Task:
    query = planner_pb2.Query(text=text, params=PARAMS)
    return node.call(planner_pb2_grpc.PlannerStub, "Ask", planner_pb2.AskRequest(query=query), timeout=120).task


def v1(node: NodeProcess, text: str) -> httpx.Response:
    info = node.call(node_pb2_grpc.NodeStub, "GetInfo", node_pb2.GetInfoRequest()).info
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], **PARAMS}
    return httpx.post(f"{info.http_url}/v1/chat/completions", json=body, timeout=60,
                      headers={"authorization": f"Bearer {node.secret}"})


@pytest.mark.llm
def test_cached_answers_outlive_the_only_model_node(node_factory: Factory, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")

    def state(name: str) -> tuple[str, str]:
        return "--state-dir", str(tmp_path / name)

    n1 = node_factory("nm-1", "--roles", "llm,cache,replica,planner", *FLAGS, *state("nm-1"), start_timeout=120)
    n2 = node_factory("nm-2", "--roles", "cache,replica,planner", *FLAGS, *state("nm-2"), "--peer", n1.address)
    n3 = node_factory("nm-3", "--roles", "cache,replica,planner,bridge", "--http-port", "0", *FLAGS,
                      *state("nm-3"), "--peer", n1.address)
    wait_for_mesh([n1, n2, n3])

    question = "Tell me a short fact about lighthouses."
    first = ask(n1, question)
    assert first.status == planner_pb2.TASK_STATUS_SUCCEEDED and first.answer
    (step,) = first.steps
    assert (step.name, step.node_name) == (MODEL, "nm-1")
    key = cache_key(question, MODEL, effective_params(planner_pb2.Query(text=question, params=PARAMS)))
    wait_until(lambda: holds(n2, key) and holds(n3, key), timeout=20, what="the answer on nm-2 and nm-3")

    n1.stop(signal.SIGKILL)
    wait_gone("nm-1", [n2, n3])

    for survivor in (n2, n3):
        again = ask(survivor, question)
        assert again.answer == first.answer, f"{survivor.name} answered differently"
        assert [(s.name, s.cache) for s in again.steps] == [(MODEL, planner_pb2.CACHE_OUTCOME_HIT)]

    with pytest.raises(grpc.RpcError) as err:
        ask(n2, "Tell me a short fact about owls.")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert MODEL in err.value.details() and "offline" in err.value.details()

    hit = v1(n3, question)
    assert hit.status_code == 200, hit.text
    assert hit.json()["choices"][0]["message"]["content"] == first.answer
    assert hit.headers["x-llmlab-cache"] == "hit"
    miss = v1(n3, "Tell me a short fact about owls.")
    assert miss.status_code == 503, miss.text
    assert MODEL in miss.json()["error"]["message"] and "offline" in miss.json()["error"]["message"]


def test_known_models_persist_per_mesh(tmp_path: Path) -> None:
    known = KnownModels(tmp_path, "mesh-a")
    known.observe(["m1", "m2"], default="m2")
    again = KnownModels(tmp_path, "mesh-a")
    assert again.names() == ["m1", "m2"] and again.default == "m2"
    assert KnownModels(tmp_path, "mesh-b").names() == [], "another mesh's models are not inherited"
    (tmp_path / "known_models.json").write_text("{not json")
    assert KnownModels(tmp_path, "mesh-a").names() == [], "a broken file is ignored"
    many = KnownModels(None, "mesh-a")
    many.observe([f"m{i}" for i in range(100)] + ["x" * 1000])
    assert len(many.names()) == 64 and "x" * 1000 not in many.names()
