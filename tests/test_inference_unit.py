"""Inference pieces without Ray or node processes: validation, the HTTP backends, the embedded model.

The HTTP backends talk to real local servers (tests/inference_fakes.py) that speak
the Ollama and OpenAI streaming APIs; the llama_cpp backend runs the real packaged
SmolLM2 model in this process.
"""

from __future__ import annotations

import json
import socket

import grpc
import pytest

from llmlab_grpc.config import NodeSettings
from llmlab_grpc.inference.backends import BackendOptions, ModelLoadError, backend_class
from llmlab_grpc.inference.errors import InferenceError
from llmlab_grpc.inference.runtime import MAX_STOP, parse_messages, parse_params
from llmlab_grpc.inference.types import GenerationError, Params, Usage
from llmlab_grpc.proto.llmlab.v1 import common_pb2
from tests.inference_fakes import FakeOllama, FakeOpenAI

TOOLS = [{"type": "function", "function": {"name": "calculator", "description": "math",
                                            "parameters": {"type": "object", "properties": {"x": {"type": "number"}}}}}]


def settings(**kw: object) -> NodeSettings:
    return NodeSettings(mesh_secret="s" * 12, **kw)  # type: ignore[arg-type]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(backend: object, text: str, params: Params) -> tuple[str, Usage | GenerationError]:
    events = list(backend.generate([{"role": "user", "content": text}], params))  # type: ignore[attr-defined]
    pieces = [e for e in events if isinstance(e, str)]
    assert len(pieces) == len(events) - 1, events
    return "".join(pieces), events[-1]


# -- validation ---------------------------------------------------------------------------
def test_params_defaults_and_bounds() -> None:
    s = settings(max_tokens_default=100, max_tokens_limit=500)
    assert parse_params(common_pb2.GenerationParams(), s).max_tokens == 100
    p = parse_params(common_pb2.GenerationParams(max_tokens=500, temperature=0.0, seed=7, stop=["x"]), s)
    assert (p.max_tokens, p.temperature, p.seed, p.stop) == (500, 0.0, 7, ("x",))
    for bad, words in [
        (common_pb2.GenerationParams(max_tokens=501), "1..500"),
        (common_pb2.GenerationParams(max_tokens=0), "1..500"),
        (common_pb2.GenerationParams(temperature=3.0), "temperature"),
        (common_pb2.GenerationParams(top_p=0.0), "top_p"),
        (common_pb2.GenerationParams(stop=["s"] * (MAX_STOP + 1)), "stop"),
        (common_pb2.GenerationParams(stop=[""]), "stop"),
        (common_pb2.GenerationParams(tools_json="{not json"), "tools_json"),
        (common_pb2.GenerationParams(tools_json='{"a": 1}'), "JSON array"),
    ]:
        with pytest.raises(InferenceError) as info:
            parse_params(bad, s)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert words in info.value.message


def test_messages_validation_and_system_prompt() -> None:
    with pytest.raises(InferenceError) as info:
        parse_messages([])
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "empty" in info.value.message
    with pytest.raises(InferenceError) as info:
        parse_messages([common_pb2.ChatMessage(role="wizard", content="x")])
    assert "wizard" in info.value.message
    out = parse_messages([common_pb2.ChatMessage(role="user", content="hi"),
                          common_pb2.ChatMessage(role="assistant", content="",
                                                 tool_calls_json=json.dumps([{"id": "c1", "type": "function"}])),
                          common_pb2.ChatMessage(role="tool", content="2", tool_call_id="c1")], "be brief")
    assert out[0] == {"role": "system", "content": "be brief"}
    assert out[2]["tool_calls"] == [{"id": "c1", "type": "function"}]
    assert out[3]["tool_call_id"] == "c1"


def test_max_tokens_default_above_limit_is_a_config_error() -> None:
    from llmlab_grpc.config import ConfigError

    with pytest.raises(ConfigError, match="max-tokens-limit"):
        settings(max_tokens_default=300, max_tokens_limit=200).check()


def test_unknown_backend_and_model() -> None:
    with pytest.raises(ModelLoadError, match="choose from"):
        backend_class("vllm")
    backend = backend_class("llama_cpp")("gpt-9", BackendOptions())
    with pytest.raises(ModelLoadError, match="smollm2-135m"):
        backend.load()


# -- ollama -------------------------------------------------------------------------------
def test_ollama_streams_lines_and_passes_params() -> None:
    with FakeOllama(["tiny:latest"]) as server:
        options = BackendOptions(url=server.url, timeout_s=10)
        assert backend_class("ollama").default_models(options) == ["tiny:latest"]
        backend = backend_class("ollama")("tiny:latest", options)
        assert backend.load().loaded
        text, usage = run(backend, "one two three four", Params(max_tokens=3, temperature=0.0, seed=5, stop=("zz",)))
        assert text == "echo: one two "
        assert usage == Usage(prompt_tokens=7, completion_tokens=3, finish_reason="length")
        sent = server.requests[-1]["body"]
        assert sent["stream"] is True
        assert sent["options"] == {"num_predict": 3, "temperature": 0.0, "seed": 5, "stop": ["zz"]}
        text, usage = run(backend, "alpha beta gamma", Params(max_tokens=50, stop=("gamma",)))
        assert text == "echo: alpha beta " and isinstance(usage, Usage) and usage.finish_reason == "stop"


def test_ollama_tool_calls_become_openai_style() -> None:
    with FakeOllama(["tiny"]) as server:
        backend = backend_class("ollama")("tiny", BackendOptions(url=server.url, timeout_s=10))
        _, usage = run(backend, "what is 2+2", Params(max_tokens=50, tools=TOOLS))
        assert server.requests[-1]["body"]["tools"] == TOOLS
        assert isinstance(usage, Usage) and usage.finish_reason == "tool_calls"
        calls = json.loads(usage.tool_calls_json)
        assert calls[0]["function"]["name"] == "calculator"
        assert json.loads(calls[0]["function"]["arguments"]) == {"x": 1}


def test_ollama_unknown_model_is_not_found() -> None:
    with FakeOllama(["tiny"]) as server:
        backend = backend_class("ollama")("huge", BackendOptions(url=server.url, timeout_s=10))
        assert not backend.load().loaded
        _, failure = run(backend, "hi", Params(max_tokens=5))
        assert isinstance(failure, GenerationError) and failure.code == "NOT_FOUND"
        assert "huge" in failure.message and server.url in failure.message


# -- openai -------------------------------------------------------------------------------
def test_openai_sse_stream_usage_and_key() -> None:
    with FakeOpenAI(["m1"], api_key="sk-test") as server:
        options = BackendOptions(url=server.url, api_key="sk-test", timeout_s=10)  # root URL: /v1 is added
        assert backend_class("openai").default_models(options) == ["m1"]
        backend = backend_class("openai")("m1", options)
        assert backend.load().loaded
        text, usage = run(backend, "a b xx", Params(max_tokens=64, temperature=0.5, top_p=0.9, seed=3, stop=("xx",)))
        assert text == "echo: a b "
        assert usage == Usage(prompt_tokens=11, completion_tokens=3, finish_reason="stop")
        request = server.requests[-1]
        assert request["path"] == "/v1/chat/completions"
        assert request["headers"]["Authorization"] == "Bearer sk-test"
        assert {k: request["body"][k] for k in ("max_tokens", "temperature", "top_p", "seed", "stop", "stream")} == {
            "max_tokens": 64, "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": ["xx"], "stream": True}
        _, usage = run(backend, "one two three four five", Params(max_tokens=2))
        assert isinstance(usage, Usage) and (usage.finish_reason, usage.completion_tokens) == ("length", 2)


def test_openai_tool_call_pieces_are_assembled() -> None:
    with FakeOpenAI(["m1"]) as server:
        backend = backend_class("openai")("m1", BackendOptions(url=server.url + "/v1", timeout_s=10))
        text, usage = run(backend, "compute", Params(max_tokens=32, tools=TOOLS))
        assert server.requests[-1]["body"]["tools"] == TOOLS
        assert text == ""
        assert isinstance(usage, Usage) and usage.finish_reason == "tool_calls"
        assert json.loads(usage.tool_calls_json) == [
            {"id": "call_abc", "type": "function", "function": {"name": "calculator", "arguments": '{"x": 1}'}}]


def test_openai_wrong_key_is_permission_denied() -> None:
    with FakeOpenAI(["m1"], api_key="right") as server:
        backend = backend_class("openai")("m1", BackendOptions(url=server.url, api_key="wrong", timeout_s=10))
        _, failure = run(backend, "hi", Params(max_tokens=5))
        assert isinstance(failure, GenerationError) and failure.code == "PERMISSION_DENIED"


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_dead_backend_is_unavailable_with_its_url(kind: str) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    options = BackendOptions(url=url, timeout_s=5)
    backend = backend_class(kind)("m", options)
    description = backend.load()
    assert not description.loaded and url in description.detail["error"]
    _, failure = run(backend, "hi", Params(max_tokens=5))
    assert isinstance(failure, GenerationError) and failure.code == "UNAVAILABLE"
    assert url in failure.message
    with pytest.raises(ModelLoadError, match=r"127\.0\.0\.1"):
        backend_class(kind).default_models(options)


# -- llama_cpp (the real embedded model, in this process) --------------------------------
@pytest.fixture(scope="module")
def smollm() -> object:
    pytest.importorskip("llama_cpp")
    # One thread: llama.cpp's worker threads spin at barriers, which turns slow when the
    # machine's cores are all busy (other test processes); one thread degrades gracefully.
    backend = backend_class("llama_cpp")("smollm2-135m", BackendOptions(threads=1))
    description = backend.load()
    assert description.context_length >= 2048
    yield backend
    backend.close()


def test_llama_counts_tokens_like_a_non_streamed_call(smollm: object) -> None:
    text, usage = run(smollm, "Tell me a joke", Params(max_tokens=200, temperature=0.0, seed=1))
    assert text and isinstance(usage, Usage)
    smollm._llm.reset()  # type: ignore[attr-defined]  # same full prompt evaluation as the backend does
    reference = smollm._llm.create_chat_completion(  # type: ignore[attr-defined]
        messages=[{"role": "user", "content": "Tell me a joke"}], max_tokens=200, temperature=0.0, seed=1)
    assert reference["usage"]["prompt_tokens"] == usage.prompt_tokens
    assert reference["usage"]["completion_tokens"] == usage.completion_tokens


def test_llama_max_tokens_stop_and_determinism(smollm: object) -> None:
    _, usage = run(smollm, "Write a story about a cat.", Params(max_tokens=5, temperature=0.0))
    assert isinstance(usage, Usage) and (usage.completion_tokens, usage.finish_reason) == (5, "length")
    first, _ = run(smollm, "Name three colors.", Params(max_tokens=40, temperature=0.8, seed=42))
    second, _ = run(smollm, "Name three colors.", Params(max_tokens=40, temperature=0.8, seed=42))
    assert first == second
    full, _ = run(smollm, "Name three colors.", Params(max_tokens=40, temperature=0.0))
    word = full.split()[1]
    cut, usage = run(smollm, "Name three colors.", Params(max_tokens=40, temperature=0.0, stop=(word,)))
    assert word not in cut and full.startswith(cut)
    assert isinstance(usage, Usage) and usage.finish_reason == "stop"


def test_coalesce_text_merges_pieces_within_the_interval_and_passes_the_rest() -> None:
    from llmlab_grpc.inference.ray_host import coalesce_text

    usage = Usage(prompt_tokens=1, completion_tokens=3, finish_reason="stop")
    merged = list(coalesce_text(iter(["a", "b", "c", usage]), interval_s=60.0))
    assert merged == ["a", "bc", usage]  # the first piece at once, the rest together, usage last
    separate = list(coalesce_text(iter(["a", "b", usage]), interval_s=0.0))
    assert separate == ["a", "b", usage]
    assert list(coalesce_text(iter(["x", "y"]), interval_s=60.0)) == ["x", "y"]
