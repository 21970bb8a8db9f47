"""The llm role end to end: real node processes, their models on Ray actors, gRPC clients.

One Ray head is started for the whole module (``RayHead``, the same code ``llmlab up``
uses) and every node joins it with ``--ray-address``; the embedded SmolLM2 model runs
for real; the Ollama and OpenAI backends talk to local servers speaking those APIs.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from llmlab_grpc.inference.client import generate_text, list_models
from llmlab_grpc.inference.errors import InferenceError
from llmlab_grpc.inference.ray_head import RayHead
from llmlab_grpc.inference.ray_host import actor_name
from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.mesh.channels import open_channel
from llmlab_grpc.proto.llmlab.v1 import common_pb2, inference_pb2, inference_pb2_grpc, node_pb2, node_pb2_grpc
from tests.helpers import NodeProcess, spawn_node, wait_until
from tests.inference_fakes import FakeOllama, FakeOpenAI
from tests.test_inference_unit import TOOLS, closed_port

pytestmark = pytest.mark.llm
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
MODEL = "smollm2-135m"
JOKE = [common_pb2.ChatMessage(role="user", content="Tell me a joke")]
STORY = [common_pb2.ChatMessage(role="user", content="Write a very long story about a dragon and a knight.")]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    pytest.importorskip("llama_cpp")
    head = RayHead.start(home_dir=tmp_path_factory.mktemp("llmlab-home"))
    yield head
    head.stop()
    assert not head.running


@pytest.fixture(scope="module")
def mesh_secret() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def start_node(ray_head: RayHead, mesh_secret: str) -> Iterator[Any]:
    """``start_node(name, *flags, env=...)``: an llm node joined to the module's Ray head."""
    started: list[NodeProcess] = []
    ARTIFACTS.mkdir(exist_ok=True)

    def make(name: str, *flags: str, env: dict[str, str] | None = None) -> NodeProcess:
        node = spawn_node(name, mesh_secret, "--roles", "llm", "--no-mdns", *ray_head.node_args(), *flags,
                          env={**ray_head.node_env(), **(env or {})}, log_dir=ARTIFACTS, start_timeout=120)
        started.append(node)
        return node

    yield make
    for node in started:
        node.stop(signal.SIGTERM, timeout=20)


@pytest.fixture(scope="module")
def llama_node(start_node: Any) -> NodeProcess:
    return start_node("inf-llama")  # the defaults: llama_cpp backend, smollm2-135m


def stub(node: NodeProcess) -> tuple[inference_pb2_grpc.InferenceStub, grpc.Channel]:
    channel = grpc.insecure_channel(node.address)
    return inference_pb2_grpc.InferenceStub(channel), channel


def generate(node: NodeProcess, messages: list[common_pb2.ChatMessage], model: str = MODEL,
             timeout: float = 120.0, **params: Any) -> list[inference_pb2.GenerateResponse]:
    request = inference_pb2.GenerateRequest(model=model, messages=messages,
                                            params=common_pb2.GenerationParams(**params))
    inference, channel = stub(node)
    with channel:
        return list(inference.Generate(request, metadata=bearer(node.secret), timeout=timeout))


def split(responses: list[inference_pb2.GenerateResponse]) -> tuple[str, inference_pb2.Usage]:
    """The text and the usage, checking the shape: text messages, then exactly one usage, last."""
    assert responses and responses[-1].HasField("usage"), responses
    assert all(r.HasField("text") for r in responses[:-1])
    return "".join(r.text for r in responses[:-1]), responses[-1].usage


def rpc_error(fn: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)
    return info.value


def load(node: NodeProcess) -> common_pb2.NodeLoad:
    return node.call(node_pb2_grpc.NodeStub, "GetInfo", node_pb2.GetInfoRequest()).load


# -- the embedded model -------------------------------------------------------------------
def test_embedded_model_streams_text_then_usage(llama_node: NodeProcess) -> None:
    info = llama_node.call(node_pb2_grpc.NodeStub, "GetInfo", node_pb2.GetInfoRequest()).info
    assert list(info.models) == [MODEL]
    models = llama_node.call(inference_pb2_grpc.InferenceStub, "ListModels", inference_pb2.ListModelsRequest()).models
    assert [(m.name, m.backend, m.node_id, m.loaded) for m in models] == [(MODEL, "llama_cpp", "inf-llama", True)]
    assert models[0].context_length >= 2048

    responses = generate(llama_node, JOKE, max_tokens=64, temperature=0.0, seed=1)
    text, usage = split(responses)
    assert text.strip()
    assert len(responses) > 2, "tokens must arrive in more than one message"
    assert (usage.model, usage.node_id) == (MODEL, "inf-llama")
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 64
    assert usage.finish_reason in ("stop", "length")


def test_max_tokens_is_honoured(llama_node: NodeProcess) -> None:
    _, usage = split(generate(llama_node, STORY, max_tokens=5, temperature=0.0))
    assert usage.completion_tokens <= 5
    assert usage.finish_reason == "length"


def test_stop_string_is_honoured(llama_node: NodeProcess) -> None:
    ask = [common_pb2.ChatMessage(role="user", content="Name three colors.")]
    full, _ = split(generate(llama_node, ask, max_tokens=40, temperature=0.0))
    word = full.split()[1]
    cut, usage = split(generate(llama_node, ask, max_tokens=40, temperature=0.0, stop=[word]))
    assert word not in cut and full.startswith(cut)
    assert usage.finish_reason == "stop"


def test_seed_and_temperature_zero_repeat_exactly(llama_node: NodeProcess) -> None:
    first, _ = split(generate(llama_node, JOKE, max_tokens=40, temperature=0.0, seed=7))
    second, _ = split(generate(llama_node, JOKE, max_tokens=40, temperature=0.0, seed=7))
    assert first == second
    warm_a, _ = split(generate(llama_node, JOKE, max_tokens=30, temperature=0.9, seed=11))
    warm_b, _ = split(generate(llama_node, JOKE, max_tokens=30, temperature=0.9, seed=11))
    assert warm_a == warm_b


def test_bad_requests_get_the_right_status(llama_node: NodeProcess) -> None:
    err = rpc_error(generate, llama_node, JOKE, model="gpt-9")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "gpt-9" in err.details() and MODEL in err.details()
    err = rpc_error(generate, llama_node, [])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "empty" in err.details()
    err = rpc_error(generate, llama_node, JOKE, max_tokens=100_000)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_tokens" in err.details()
    err = rpc_error(generate, llama_node, [common_pb2.ChatMessage(role="robot", content="x")])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, usage = split(generate(llama_node, JOKE, max_tokens=4))  # and the node still serves
    assert usage.completion_tokens <= 4


def test_concurrent_generations_all_complete(llama_node: NodeProcess) -> None:
    asks = [[common_pb2.ChatMessage(role="user", content=f"Say something about the number {i}.")] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda m: split(generate(llama_node, m, max_tokens=24, temperature=0.0)), asks))
    assert all(text and 0 < usage.completion_tokens <= 24 for text, usage in results)
    wait_until(lambda: load(llama_node).generations_running == 0, 10, what="no generation left running")


def test_client_cancel_stops_the_generation(llama_node: NodeProcess) -> None:
    inference, channel = stub(llama_node)
    with channel:
        call = inference.Generate(
            inference_pb2.GenerateRequest(model=MODEL, messages=STORY, params=common_pb2.GenerationParams(
                max_tokens=2000, temperature=0.0)),
            metadata=bearer(llama_node.secret), timeout=120)
        assert next(call).HasField("text")
        assert load(llama_node).generations_running == 1
        call.cancel()
    wait_until(lambda: load(llama_node).generations_running == 0, 10, what="the cancelled generation to end")
    _, usage = split(generate(llama_node, JOKE, max_tokens=8))  # the actor is free again
    assert usage.completion_tokens <= 8


# -- HTTP backends through a node ---------------------------------------------------------
def test_ollama_backend_through_a_node(start_node: Any) -> None:
    with FakeOllama(["tiny:latest"]) as server:
        node = start_node("inf-ollama", "--llm-backend", "ollama", "--ollama-url", server.url)  # models discovered
        info = node.call(node_pb2_grpc.NodeStub, "GetInfo", node_pb2.GetInfoRequest()).info
        assert list(info.models) == ["tiny:latest"]
        ask = [common_pb2.ChatMessage(role="user", content="one two three four five")]
        responses = generate(node, ask, model="tiny:latest", max_tokens=4, temperature=0.2, seed=3)
        text, usage = split(responses)
        # Pieces produced back to back travel together (ray_host.coalesce_text); the stream
        # still ends with exactly one usage message.
        assert text == "echo: one two three " and responses[-1].HasField("usage")
        assert sum(r.HasField("usage") for r in responses) == 1
        assert (usage.finish_reason, usage.completion_tokens, usage.prompt_tokens) == ("length", 4, 7)
        assert server.requests[-1]["body"]["options"] == {"num_predict": 4, "temperature": pytest.approx(0.2),
                                                          "seed": 3}
        _, usage = split(generate(node, ask, model="tiny:latest", tools_json=json.dumps(TOOLS)))
        assert usage.finish_reason == "tool_calls"
        assert json.loads(usage.tool_calls_json)[0]["function"]["name"] == "calculator"
        assert rpc_error(generate, node, ask, model="big").code() == grpc.StatusCode.NOT_FOUND


def test_openai_backend_through_a_node_queue_bound_and_cancel(start_node: Any) -> None:
    with FakeOpenAI(["m1"], api_key="sk-local") as server:
        node = start_node("inf-openai", "--llm-backend", "openai", "--openai-url", f"{server.url}/v1",
                          "--llm-models", "m1", "--llm-max-queued", "0", env={"LLMLAB_OPENAI_API_KEY": "sk-local"})
        text, usage = split(generate(node, [common_pb2.ChatMessage(role="user", content="hello there")], model="m1"))
        assert text == "echo: hello there "
        assert (usage.prompt_tokens, usage.completion_tokens, usage.model) == (11, 3, "m1")
        _, usage = split(generate(node, JOKE, model="m1", tools_json=json.dumps(TOOLS)))
        assert json.loads(usage.tool_calls_json)[0]["function"] == {"name": "calculator", "arguments": '{"x": 1}'}

        # 4 streams run at once (HTTP backends) and none may queue: the 5th is refused at once.
        inference, channel = stub(node)
        with channel:
            slow = inference_pb2.GenerateRequest(model="m1", messages=[common_pb2.ChatMessage(
                role="user", content="slow 400")], params=common_pb2.GenerationParams(max_tokens=1000))
            calls = [inference.Generate(slow, metadata=bearer(node.secret), timeout=120) for _ in range(4)]
            for call in calls:
                assert next(call).text
            err = rpc_error(lambda: list(inference.Generate(slow, metadata=bearer(node.secret), timeout=30)))
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--llm-max-queued" in err.details()
            for call in calls:
                call.cancel()
        # The cancel reaches the backend: the server sees its clients go away.
        wait_until(lambda: server.disconnects >= 4, 15, what="the backend to see the cancelled streams close")
        wait_until(lambda: load(node).generations_running == 0, 10, what="admission to be released")
        text, _ = split(generate(node, [common_pb2.ChatMessage(role="user", content="again")], model="m1"))
        assert text == "echo: again "


def test_dead_backend_is_unavailable_with_its_url(start_node: Any) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    node = start_node("inf-dead", "--llm-backend", "ollama", "--ollama-url", url, "--llm-models", "tiny")
    models = node.call(inference_pb2_grpc.InferenceStub, "ListModels", inference_pb2.ListModelsRequest()).models
    assert [(m.name, m.loaded) for m in models] == [("tiny", False)]
    err = rpc_error(generate, node, JOKE, model="tiny")
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert url in err.details()


# -- failure of the node itself ---------------------------------------------------------
ACTOR_PROBE = """
import sys, time
from llmlab_grpc.ray_runtime import ensure_ray
ray = ensure_ray(sys.argv[1])
alive, dead = sys.argv[2], sys.argv[3]
ray.get_actor(alive, namespace="llmlab")  # raises if the live node's actor were missing
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        ray.get_actor(dead, namespace="llmlab")
    except ValueError:
        print("gone")
        sys.exit(0)
    time.sleep(0.5)
print("still there")
"""


def test_killed_llm_node_gives_a_clear_error_and_leaves_no_actor(
        start_node: Any, llama_node: NodeProcess, ray_head: RayHead) -> None:
    victim = start_node("inf-victim")
    inference, channel = stub(victim)
    errors: list[grpc.RpcError] = []
    first = threading.Event()

    def consume() -> None:
        try:
            for _ in inference.Generate(
                    inference_pb2.GenerateRequest(model=MODEL, messages=STORY,
                                                  params=common_pb2.GenerationParams(max_tokens=2000)),
                    metadata=bearer(victim.secret), timeout=60):
                first.set()
        except grpc.RpcError as err:
            errors.append(err)
        finally:
            first.set()

    with channel:
        reader = threading.Thread(target=consume)
        reader.start()
        assert first.wait(60)
        victim.stop(signal.SIGKILL)
        reader.join(30)
    assert not reader.is_alive(), "the client hung after the node died"
    assert errors and errors[0].code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), errors
    probe = subprocess.run(
        [sys.executable, "-c", ACTOR_PROBE, ray_head.address, actor_name("inf-llama", MODEL),
         actor_name("inf-victim", MODEL)], capture_output=True, text=True, timeout=90,
        env={**os.environ, **ray_head.node_env()})
    assert probe.stdout.strip().endswith("gone"), probe.stdout + probe.stderr[-2000:]


# -- the client helpers: a peer's channel and this node's own runtime -----------------------
LOCAL_RUNTIME = """
import asyncio, json, sys
from llmlab_grpc.config import NodeSettings
from llmlab_grpc.inference.client import generate_stream, generate_text, list_models
from llmlab_grpc.inference.errors import InferenceError
from llmlab_grpc.inference.runtime import InferenceRuntime

async def main():
    settings = NodeSettings(mesh_secret="x" * 12, ray_address=sys.argv[1], llm_backend="openai",
                            openai_url=sys.argv[2], llm_models=["m1"])
    runtime = InferenceRuntime("inf-local", settings)
    await runtime.start()
    out = {"models": [m.name for m in await list_models(runtime)]}
    text, usage = await generate_text(runtime, "m1", [{"role": "user", "content": "local call"}])
    out["text"], out["node"] = text, usage.node_id
    try:
        await generate_text(runtime, "m1", [{"role": "user", "content": "slow 100"}], timeout=0.5)
    except InferenceError as err:
        out["timeout"] = err.code.name
    try:
        await generate_text(runtime, "nope", [{"role": "user", "content": "x"}])
    except InferenceError as err:
        out["unknown"] = err.code.name
    await runtime.stop()
    print(json.dumps(out))

asyncio.run(main())
"""


def test_client_helpers_over_a_channel_and_in_process(llama_node: NodeProcess, ray_head: RayHead) -> None:
    async def remote() -> None:
        channel = open_channel(llama_node.address, llama_node.secret)
        try:
            assert [m.name for m in await list_models(channel)] == [MODEL]
            text, usage = await generate_text(channel, MODEL, [{"role": "user", "content": "Hi"}], {"max_tokens": 8})
            assert text and usage.node_id == "inf-llama" and usage.completion_tokens <= 8
            with pytest.raises(InferenceError) as info:
                await generate_text(channel, "gpt-9", [{"role": "user", "content": "Hi"}])
            assert info.value.code == grpc.StatusCode.NOT_FOUND
        finally:
            await channel.close()

    asyncio.run(remote())

    with FakeOpenAI(["m1"]) as server:  # the local path, in a process that joins the module's Ray head
        run = subprocess.run([sys.executable, "-c", LOCAL_RUNTIME, ray_head.address, server.url],
                             capture_output=True, text=True, timeout=120, env={**os.environ, **ray_head.node_env()})
        assert run.returncode == 0, run.stderr[-3000:]
        out = json.loads(run.stdout.strip().splitlines()[-1])
        assert out == {"models": ["m1"], "text": "echo: local call ", "node": "inf-local",
                       "timeout": "DEADLINE_EXCEEDED", "unknown": "NOT_FOUND"}
        wait_until(lambda: server.disconnects >= 1, 10, what="the timed-out stream to be closed at the backend")
