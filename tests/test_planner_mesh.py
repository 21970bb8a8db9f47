"""The planner end to end on real node processes: tools, the embedded model, cache, failover, errors."""

from __future__ import annotations

import json
import secrets
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest

from llmlab_grpc.inference.ray_head import RayHead
from llmlab_grpc.procs import NodeProcess, spawn_node
from llmlab_grpc.proto.llmlab.v1 import planner_pb2, planner_pb2_grpc
from tests.conftest import ray_env
from tests.helpers import wait_until

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def mesh(ray_head: RayHead) -> Iterator[dict[str, NodeProcess]]:
    """brain: every role but bridge; edge: planner and tools only (it must route generations)."""
    secret = secrets.token_urlsafe(24)
    ARTIFACTS.mkdir(exist_ok=True)
    brain = spawn_node("brain", secret, "--no-mdns", "--roles", "planner,tools,llm,cache,replica",
                       env={**ray_env(ray_head), "LLMLAB_CACHE_STORE": "ray"}, log_dir=ARTIFACTS, start_timeout=120)
    edge = spawn_node("edge", secret, "--no-mdns", "--roles", "planner,tools", "--peer", brain.address,
                      env={"LLMLAB_CACHE_STORE": "memory"}, log_dir=ARTIFACTS)
    try:
        wait_until(lambda: edge.peer_names() == {"brain"} and brain.peer_names() == {"edge"}, 20, what="mesh")
        yield {"brain": brain, "edge": edge}
    finally:
        edge.stop()
        brain.stop()


def ask(node: NodeProcess, text: str, **query: object) -> planner_pb2.Task:
    request = planner_pb2.AskRequest(query=planner_pb2.Query(text=text, **query))  # type: ignore[arg-type]
    return node.call(planner_pb2_grpc.PlannerStub, "Ask", request, timeout=300).task


def test_arithmetic_is_answered_by_the_calculator(mesh: dict[str, NodeProcess]) -> None:
    task = ask(mesh["brain"], "What is 25 * 67?")
    assert "1675" in task.answer
    assert task.status == planner_pb2.TASK_STATUS_SUCCEEDED
    assert len(task.steps) == 1
    step = task.steps[0]
    assert (step.kind, step.name, step.node_name) == (planner_pb2.STEP_KIND_TOOL, "calculator", "brain")
    assert "25 * 67" in step.reason


def test_plain_question_is_generated_by_the_embedded_model_then_cached(mesh: dict[str, NodeProcess]) -> None:
    first = ask(mesh["brain"], "Tell me a joke")
    assert first.answer.strip()
    (step,) = first.steps
    assert (step.kind, step.name, step.node_name) == (planner_pb2.STEP_KIND_LLM, MODEL, "brain")
    assert step.cache in (planner_pb2.CACHE_OUTCOME_MISS, planner_pb2.CACHE_OUTCOME_HIT)
    second = ask(mesh["brain"], "Tell me a joke")
    assert second.steps[0].cache == planner_pb2.CACHE_OUTCOME_HIT
    assert second.answer == first.answer
    bypass = ask(mesh["brain"], "Tell me a joke", no_cache=True)
    assert bypass.steps[0].cache == planner_pb2.CACHE_OUTCOME_BYPASS


def test_a_planner_without_a_model_routes_the_generation(mesh: dict[str, NodeProcess]) -> None:
    task = ask(mesh["edge"], "Name a colour.", no_cache=True,
               params={"max_tokens": 8, "temperature": 0.0})
    (step,) = task.steps
    assert step.node_name == "brain" and task.answer


def test_stream_delivers_events_in_order_and_tokens_in_pieces(mesh: dict[str, NodeProcess]) -> None:
    request = planner_pb2.AskStreamRequest(query=planner_pb2.Query(
        text="Write two sentences about the sea.", no_cache=True, params={"max_tokens": 40}))
    with mesh["brain"].channel() as channel:
        events = list(planner_pb2_grpc.PlannerStub(channel).AskStream(
            request, metadata=(("authorization", f"Bearer {mesh['brain'].secret}"),), timeout=300))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "plan_made" and kinds[-1] == "final"
    assert "step_started" in kinds and "step_done" in kinds
    tokens = [e.token.text for e in events if e.WhichOneof("event") == "token"]
    assert len(tokens) > 1
    final = events[-1].final
    assert "".join(tokens).strip() == final.answer
    assert len({e.task_id for e in events}) == 1


def test_max_tokens_and_stop_are_honoured(mesh: dict[str, NodeProcess]) -> None:
    short = ask(mesh["brain"], "Count from one to fifty in words.", no_cache=True,
                params={"max_tokens": 5, "temperature": 0.0})
    assert 0 < len(short.answer.split()) <= 6
    stopped = ask(mesh["brain"], "Count from 1 to 20 separated by commas.", no_cache=True,
                  params={"max_tokens": 60, "temperature": 0.0, "stop": ["7"]})
    assert "7" not in stopped.answer


def test_tasks_are_listed_and_fetched(mesh: dict[str, NodeProcess]) -> None:
    task = ask(mesh["brain"], "What is 2 + 2?")
    listed = mesh["brain"].call(planner_pb2_grpc.PlannerStub, "ListTasks", planner_pb2.ListTasksRequest(limit=5))
    assert listed.tasks[0].task_id == task.task_id
    got = mesh["brain"].call(planner_pb2_grpc.PlannerStub, "GetTask", planner_pb2.GetTaskRequest(task_id=task.task_id))
    assert got.task.answer == "4"
    with pytest.raises(grpc.RpcError) as err:
        mesh["brain"].call(planner_pb2_grpc.PlannerStub, "GetTask", planner_pb2.GetTaskRequest(task_id="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("text", "params"),
    [("", {}), ("hi", {"temperature": 5.0}), ("hi", {"top_p": 0.0}), ("x" * 40_000, {})],
)
def test_bad_queries_are_invalid_argument(mesh: dict[str, NodeProcess], text: str, params: dict) -> None:
    with pytest.raises(grpc.RpcError) as err:
        ask(mesh["edge"], text, params=params)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class _FakeOpenAI(BaseHTTPRequestHandler):
    """An OpenAI-compatible server on loopback whose model never produces JSON."""

    answer = "I would rather just chat about it."

    def log_message(self, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": [{"id": "chatty", "object": "model", "owned_by": "test"}]})
        self._send(200, body.encode(), "application/json")

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        request = json.loads(self.rfile.read(length) or b"{}")
        if not request.get("stream"):
            body = {"id": "x", "object": "chat.completion", "model": "chatty", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": self.answer}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}}
            self._send(200, json.dumps(body).encode(), "application/json")
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for piece in self.answer.split(" "):
            chunk = {"id": "x", "object": "chat.completion.chunk", "model": "chatty",
                     "choices": [{"index": 0, "delta": {"content": piece + " "}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        done = {"id": "x", "object": "chat.completion.chunk", "model": "chatty",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())

    def _send(self, code: int, body: bytes, kind: str) -> None:
        self.send_response(code)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_invalid_model_tool_call_falls_back_to_plain_generation(node_factory) -> None:  # type: ignore[no-untyped-def]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        node = node_factory("chatty", "--no-mdns", "--roles", "planner,tools,llm", "--llm-backend", "openai",
                            "--openai-url", f"http://127.0.0.1:{server.server_address[1]}/v1",
                            "--llm-models", "chatty", start_timeout=120)
        task = ask(node, "Please convert three miles to kilometres", no_cache=True)
    finally:
        server.shutdown()
    proposal, answer = task.steps
    assert proposal.kind == planner_pb2.STEP_KIND_LLM and "JSON Schemas" in proposal.reason
    assert answer.kind == planner_pb2.STEP_KIND_LLM
    assert "no JSON tool call" in answer.reason and "falling back to plain generation" in answer.reason
    assert task.answer == _FakeOpenAI.answer


def test_dead_backend_is_unavailable_with_its_url(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory("orphan", "--no-mdns", "--roles", "planner,llm", "--llm-backend", "ollama",
                        "--ollama-url", "http://127.0.0.1:9/", "--llm-models", "llama3", start_timeout=120)
    with pytest.raises(grpc.RpcError) as err:
        ask(node, "Tell me a joke", no_cache=True)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "127.0.0.1:9" in err.value.details()


def test_llm_node_killed_mid_stream_then_failover(node_factory) -> None:  # type: ignore[no-untyped-def]
    first = node_factory("llm-a", "--no-mdns", "--roles", "llm", start_timeout=120)
    second = node_factory("llm-b", "--no-mdns", "--roles", "llm", "--peer", first.address, start_timeout=120)
    planner = node_factory("asker", "--no-mdns", "--roles", "planner", "--peer", first.address)
    wait_until(lambda: planner.peer_names() == {"llm-a", "llm-b"}, 20, what="both llm nodes")
    request = planner_pb2.AskStreamRequest(query=planner_pb2.Query(
        text="Write a long story about a lighthouse keeper.", no_cache=True,
        params={"max_tokens": 400}))
    victim: NodeProcess | None = None
    with planner.channel() as channel, pytest.raises(grpc.RpcError) as err:
        stream = planner_pb2_grpc.PlannerStub(channel).AskStream(
            request, metadata=(("authorization", f"Bearer {planner.secret}"),), timeout=120)
        for event in stream:
            if event.WhichOneof("event") == "step_started":
                victim = first if event.step_started.node_id == "llm-a" else second
            if event.WhichOneof("event") == "token" and victim is not None:
                victim.stop(signal.SIGKILL)
    assert victim is not None
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "failed mid-answer" in err.value.details()
    survivor = second if victim is first else first
    task = ask(planner, "Name a fruit.", no_cache=True, params={"max_tokens": 8})
    assert task.steps[0].node_name == survivor.name and task.answer
