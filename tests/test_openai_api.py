"""The OpenAI-compatible /v1 API on real node processes, called with the official ``openai`` package.

One mesh for the module, joined to the session's Ray head: ``oa-api`` (planner, tools, llm with
the embedded SmolLM2, cache, bridge), ``oa-tooly`` (llm only, the ``openai`` backend
in front of a local server speaking the OpenAI API, whose model calls tools), and
``oa-edge`` (bridge only: it must reach the planner of ``oa-api`` over gRPC).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from llmlab_grpc.inference.ray_head import RayHead
from llmlab_grpc.proto.llmlab.v1 import node_pb2, node_pb2_grpc
from tests.conftest import ray_env
from tests.helpers import NodeProcess, spawn_node, wait_until
from tests.inference_fakes import FakeOpenAI

pytestmark = pytest.mark.llm
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
MODEL = "smollm2-135m"
FAKE = "fake-tools"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@dataclass
class Mesh:
    api: NodeProcess
    edge: NodeProcess
    fake: FakeOpenAI
    keys_file: Path
    home: Path

    @staticmethod
    def url(node: NodeProcess) -> str:
        info = node.call(node_pb2_grpc.NodeStub, "GetInfo", node_pb2.GetInfoRequest()).info
        assert info.http_url, f"{node.name} has no HTTP side"
        return f"{info.http_url}/v1"

    def client(self, node: NodeProcess | None = None, key: str | None = None) -> openai.OpenAI:
        node = node or self.api
        return openai.OpenAI(base_url=self.url(node), api_key=key or node.secret, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, ray_head: RayHead) -> Iterator[Mesh]:
    pytest.importorskip("llama_cpp")
    home = tmp_path_factory.mktemp("openai-home")
    ARTIFACTS.mkdir(exist_ok=True)
    secret = secrets.token_urlsafe(24)
    keys_file = home / "api_keys.json"
    fake = FakeOpenAI([FAKE]).__enter__()
    env = {**ray_env(ray_head), "LLMLAB_CACHE_STORE": "memory", "LLMLAB_HOME": str(home)}
    started: list[NodeProcess] = []
    try:
        api = spawn_node("oa-api", secret, "--no-mdns", "--roles", "planner,tools,llm,cache,bridge",
                         "--http-port", "0", "--api-keys-file", str(keys_file),
                         env=env, log_dir=ARTIFACTS, start_timeout=120)
        started.append(api)
        started.append(spawn_node("oa-tooly", secret, "--no-mdns", "--roles", "llm", "--llm-backend", "openai",
                                  "--openai-url", f"{fake.url}/v1", "--llm-models", FAKE, "--peer", api.address,
                                  env=env, log_dir=ARTIFACTS, start_timeout=120))
        edge = spawn_node("oa-edge", secret, "--no-mdns", "--roles", "bridge", "--http-port", "0",
                          "--api-timeout", "2", "--peer", api.address, env=env, log_dir=ARTIFACTS)
        started.append(edge)
        wait_until(lambda: api.peer_names() == {"oa-tooly", "oa-edge"}
                   and edge.peer_names() == {"oa-api", "oa-tooly"}, 30, what="the mesh")
        yield Mesh(api=api, edge=edge, fake=fake, keys_file=keys_file, home=home)
    finally:
        for node in reversed(started):
            node.stop(timeout=20)
        fake.__exit__(None, None, None)


def ask(client: openai.OpenAI, text: str, model: str = MODEL, **kwargs: object) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                          **kwargs)


def test_models_lists_every_model_of_every_live_llm_node(mesh: Mesh) -> None:
    models = {m.id: m for m in mesh.client().models.list().data}
    assert set(models) == {MODEL, FAKE}
    assert models[MODEL].owned_by == "llmlab"
    nodes = models[MODEL].model_extra["llmlab"]["nodes"]  # type: ignore[index]
    assert nodes[0]["node_name"] == "oa-api" and nodes[0]["backend"] == "llama_cpp"
    assert mesh.client().models.retrieve(FAKE).id == FAKE
    with pytest.raises(openai.NotFoundError):
        mesh.client().models.retrieve("no-such-model")


def test_non_streamed_completion_from_the_embedded_model(mesh: Mesh) -> None:
    answer = ask(mesh.client(), "Name a colour.", max_tokens=12, temperature=0)
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert answer.model == MODEL and answer.object == "chat.completion"
    assert answer.usage is not None and answer.usage.prompt_tokens > 0
    assert 0 < answer.usage.completion_tokens <= 12
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    trace = answer.model_extra["llmlab"]  # type: ignore[index]
    assert trace["usage"] == "model"
    assert [(s["kind"], s["name"], s["node_name"]) for s in trace["steps"]] == [("llm", MODEL, "oa-api")]
    assert answer.id == f"chatcmpl-{trace['task_id']}"


def test_streamed_completion_from_the_embedded_model(mesh: Mesh) -> None:
    stream = mesh.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write two sentences about the sea."}],
        max_tokens=24, stream=True, stream_options={"include_usage": True}, extra_headers={"Cache-Control": "no-cache"})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason in ("stop", "length")
    assert finals[0].model_extra["llmlab"]["cache"] == "bypass"  # type: ignore[index]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert 0 < usage_chunk.usage.completion_tokens <= 24
    assert len({c.id for c in chunks}) == 1


def test_second_identical_call_is_a_cache_hit(mesh: Mesh) -> None:
    client = mesh.client()
    messages = [{"role": "user", "content": "Name a fruit."}]
    first = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, max_tokens=10)
    assert first.headers["x-llmlab-cache"] in ("miss", "hit")
    second = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, max_tokens=10)
    assert second.headers["x-llmlab-cache"] == "hit"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    # A hit reports the usage the generation behind the entry reported (issue 13: replay with usage).
    assert second.parse().model_extra["llmlab"]["usage"] == "cache"  # type: ignore[index]
    assert second.parse().usage is not None and second.parse().usage.completion_tokens > 0
    bypass = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, max_tokens=10, extra_headers={"Cache-Control": "no-cache"})
    assert bypass.headers["x-llmlab-cache"] == "bypass"
    streamed = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, max_tokens=10,
                                                                stream=True)
    assert streamed.headers["x-llmlab-cache"] == "hit"
    text = "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)
    assert text.strip() == first.parse().choices[0].message.content


def test_no_store_is_looked_up_but_not_stored(mesh: Mesh) -> None:
    client = mesh.client()
    messages = [{"role": "user", "content": "echo gamma delta"}]
    kept_out = client.chat.completions.with_raw_response.create(
        model=FAKE, messages=messages, extra_headers={"Cache-Control": "no-store"})
    assert kept_out.headers["x-llmlab-cache"] == "miss"
    again = client.chat.completions.with_raw_response.create(model=FAKE, messages=messages)
    assert again.headers["x-llmlab-cache"] == "miss"
    third = client.chat.completions.with_raw_response.create(model=FAKE, messages=messages)
    assert third.headers["x-llmlab-cache"] == "hit"


def test_arithmetic_is_answered_by_the_calculator(mesh: Mesh) -> None:
    raw = mesh.client().chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "What is 25 * 67?"}])
    answer = raw.parse()
    assert "1675" in (answer.choices[0].message.content or "")
    assert raw.headers["x-llmlab-cache"] == "none"
    steps = answer.model_extra["llmlab"]["steps"]  # type: ignore[index]
    assert [(s["kind"], s["name"]) for s in steps] == [("tool", "calculator")]
    assert answer.usage is not None and answer.usage.completion_tokens == 1 and answer.usage.prompt_tokens == 0


def test_tools_false_sends_even_arithmetic_to_the_model(mesh: Mesh) -> None:
    answer = ask(mesh.client(), "What is 25 * 67?", model=FAKE, extra_body={"llmlab": {"tools": False}})
    assert answer.choices[0].message.content == "echo: What is 25 * 67?"
    assert answer.model_extra["llmlab"]["steps"][0]["kind"] == "llm"  # type: ignore[index]


def test_streamed_tool_answer(mesh: Mesh) -> None:
    chunks = list(mesh.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "12 * 12"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "144"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_parameters_and_conversation_reach_the_model(mesh: Mesh) -> None:
    answer = mesh.client().chat.completions.create(
        model=FAKE, temperature=0.3, top_p=0.9, seed=7, stop=["gamma"],
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"},
                  {"role": "assistant", "content": "echo: hello"},
                  {"role": "user", "content": "alpha beta gamma delta"}])
    assert answer.choices[0].message.content == "echo: alpha beta"
    body = mesh.fake.requests[-1]["body"]
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][0]["content"] == "Be brief."
    assert (body["temperature"], body["top_p"], body["seed"], body["stop"]) == (
        pytest.approx(0.3), pytest.approx(0.9), 7, ["gamma"])
    cut = ask(mesh.client(), "one two three four five", model=FAKE, max_completion_tokens=2)
    assert cut.choices[0].finish_reason == "length"
    assert cut.choices[0].message.content == "echo: one"


def test_function_calling_passes_through_to_the_model(mesh: Mesh) -> None:
    client = mesh.client()
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    answer = client.chat.completions.create(model=FAKE, messages=messages, tools=[WEATHER_TOOL])  # type: ignore[list-item]
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id == "call_abc"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"x": 1}
    assert mesh.fake.requests[-1]["body"]["tools"][0]["function"]["name"] == "get_weather"
    # Not cached (the cache holds text only), so the streamed call asks the model again and gets the call.
    chunks = list(client.chat.completions.create(model=FAKE, messages=messages, tools=[WEATHER_TOOL],  # type: ignore[list-item]
                                                 stream=True))
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert [(d.index, d.function.name) for d in deltas] == [(0, "get_weather")]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # The second half: the tool's result goes back and the model continues from it.
    follow_up = client.chat.completions.create(model=FAKE, messages=[
        *messages, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}])
    assert follow_up.choices[0].message.content == "echo: What is the weather in Paris?"
    sent = mesh.fake.requests[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["id"] == "call_abc" and sent[2]["tool_call_id"] == "call_abc"


def test_a_client_that_goes_away_stops_the_generation(mesh: Mesh) -> None:
    before = mesh.fake.disconnects
    stream = mesh.client().chat.completions.create(
        model=FAKE, messages=[{"role": "user", "content": "slow 80"}], stream=True,
        extra_headers={"Cache-Control": "no-cache"})
    words = 0
    for chunk in stream:
        words += bool(chunk.choices and chunk.choices[0].delta.content)
        if words == 2:
            break
    stream.close()
    wait_until(lambda: mesh.fake.disconnects > before, 6, what="the model server to see the stream closed")


def test_a_non_streamed_client_that_goes_away_stops_the_generation(mesh: Mesh) -> None:
    """Without a stream nothing is written until the end, so the server must watch for the client leaving."""
    target = mesh.api
    before = mesh.fake.disconnects
    with pytest.raises(httpx.ReadTimeout):  # the client gives up after 1 s of an 8 s generation
        httpx.post(f"{mesh.url(target)}/chat/completions",
                   json={"model": FAKE, "messages": [{"role": "user", "content": "slow 80"}]},
                   headers={"Authorization": f"Bearer {target.secret}", "Cache-Control": "no-cache"},
                   timeout=httpx.Timeout(30, read=1.0))
    wait_until(lambda: mesh.fake.disconnects > before, 6, what="the model server to see the generation cancelled")


def test_errors_before_a_stream_starts_keep_their_status(mesh: Mesh) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        list(mesh.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                   max_tokens=999_999, stream=True))
    assert "max_tokens" in err.value.message


def test_unknown_model_is_not_found(mesh: Mesh) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        ask(mesh.client(), "hi", model="gpt-4o")
    assert err.value.code == "model_not_found" and "smollm2-135m" in err.value.message


def test_bad_key_is_rejected_and_api_keys_work(mesh: Mesh) -> None:
    with pytest.raises(openai.AuthenticationError):
        mesh.client(key="sk-wrong").models.list()
    cli = [sys.executable, "-m", "llmlab_grpc", "apikey"]
    made = subprocess.run([*cli, "add", "tester", "--file", str(mesh.keys_file)], capture_output=True, text=True,
                          check=True, timeout=60)
    key = made.stdout.strip()
    assert key.startswith("llk_") and key not in mesh.keys_file.read_text()
    assert [m.id for m in mesh.client(key=key).models.list().data]
    subprocess.run([*cli, "remove", "tester", "--file", str(mesh.keys_file)], check=True, timeout=60,
                   capture_output=True)
    with pytest.raises(openai.AuthenticationError):
        mesh.client(key=key).models.list()


def test_malformed_requests_are_bad_requests(mesh: Mesh) -> None:
    url = f"{mesh.url(mesh.api)}/chat/completions"
    headers = {"Authorization": f"Bearer {mesh.api.secret}", "Content-Type": "application/json"}
    broken = httpx.post(url, content=b'{"model": "smollm2-135m", "messages": [', headers=headers, timeout=30)
    assert broken.status_code == 400
    assert "not valid JSON" in broken.json()["error"]["message"]
    huge = httpx.post(url, content=b'{"model": "' + b"x" * (2 * 1024 * 1024) + b'"}', headers=headers, timeout=30)
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
    missing = httpx.post(url, json={"model": MODEL}, headers=headers, timeout=30)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "messages"
    unauthenticated = httpx.post(url, json={}, timeout=30)
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.BadRequestError) as err:
        ask(mesh.client(), "hi", n=2)
    assert err.value.status_code == 400 and "n=1" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        mesh.client().chat.completions.create(model=MODEL, messages=[
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    assert err.value.body["param"] == "messages[1].role"  # type: ignore[index]


def test_a_bridge_only_node_routes_to_a_planner_peer(mesh: Mesh) -> None:
    answer = ask(mesh.client(mesh.edge), "What is 25 * 67?")
    assert "1675" in (answer.choices[0].message.content or "")
    assert answer.model_extra["llmlab"]["planner_node_id"] == "oa-api"  # type: ignore[index]
    chunks = list(mesh.client(mesh.edge).chat.completions.create(
        model=FAKE, messages=[{"role": "user", "content": "say something nice"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip() == "echo: say something nice"


def test_deadline_is_a_504(mesh: Mesh) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        ask(mesh.client(mesh.edge), "slow 60", model=FAKE, extra_headers={"Cache-Control": "no-cache"})
    assert err.value.status_code == 504 and err.value.code == "timeout"


def test_no_llm_node_is_a_503(node_factory) -> None:  # type: ignore[no-untyped-def]
    lonely = node_factory("oa-lonely", "--no-mdns", "--roles", "planner,tools,bridge", "--http-port", "0")
    client = openai.OpenAI(base_url=Mesh.url(lonely), api_key=lonely.secret, max_retries=0)
    with pytest.raises(openai.InternalServerError) as err:
        ask(client, "Tell me a joke")
    assert err.value.status_code == 503 and err.value.code == "no_llm_node"
    assert client.models.list().data == []
