"""The /v1 API's pure parts: request validation, translation to a Query, answers from a Task, API keys."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError

from llmlab_grpc.openai_api import translate
from llmlab_grpc.openai_api.auth import ApiAuth, add_key, list_keys, remove_key
from llmlab_grpc.openai_api.errors import ApiError
from llmlab_grpc.openai_api.routes import OpenAIApi, _validation_error
from llmlab_grpc.openai_api.schemas import ChatCompletionRequest
from llmlab_grpc.proto.llmlab.v1 import planner_pb2
from llmlab_grpc.safejson import MAX_DEPTH

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def request(**fields: object) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return ChatCompletionRequest.model_validate(body)


def test_conversation_becomes_system_prompt_history_and_text() -> None:
    query = translate.to_query(request(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use metric."},
        {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "question"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "user", "content": "and now?"},
    ]))
    assert query.text == "and now?"
    assert query.params.system_prompt == "Be brief.\n\nUse metric."
    assert [(t.role, t.content) for t in query.history] == [
        ("user", "first\nquestion"), ("assistant", ""), ("tool", "42")]
    assert json.loads(query.history[1].tool_calls_json)[0]["function"]["name"] == "f"
    assert query.history[2].tool_call_id == "c1"
    assert not query.no_tools and not query.no_cache and not query.no_store


def test_a_conversation_ending_with_a_tool_result_is_continued() -> None:
    query = translate.to_query(request(tools=[TOOL], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]))
    assert query.text == ""
    assert [t.role for t in query.history] == ["user", "assistant", "tool"]
    assert query.history[-1].content == "sunny" and query.no_tools


def test_parameters_are_carried() -> None:
    query = translate.to_query(request(temperature=0, top_p=0.5, seed=9, stop="END", max_tokens=50,
                                       max_completion_tokens=20), "no-cache, No-Store")
    params = query.params
    assert (params.temperature, params.top_p, params.seed, list(params.stop), params.max_tokens) == (
        0.0, 0.5, 9, ["END"], 20)
    assert query.no_cache and query.no_store
    unset = translate.to_query(request()).params
    assert not unset.HasField("temperature") and not unset.HasField("max_tokens") and not unset.HasField("seed")


def test_function_tools_pass_through_and_turn_planner_tools_off() -> None:
    query = translate.to_query(request(tools=[TOOL]))
    assert query.no_tools and json.loads(query.params.tools_json)[0]["function"]["name"] == "get_weather"
    none = translate.to_query(request(tools=[TOOL], tool_choice="none"))
    assert not none.params.tools_json and not none.no_tools
    assert translate.to_query(request(llmlab={"tools": False})).no_tools


@pytest.mark.parametrize(("fields", "param"), [
    ({"n": 2}, "n"),
    ({"temperature": 3}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": ""}, "stop"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"logprobs": True}, "logprobs"),
    ({"llmlab": {"tool": False}}, "llmlab.tool"),
])
def test_invalid_fields_are_named(fields: dict, param: str) -> None:
    with pytest.raises(ValidationError) as err:
        request(**fields)
    error = _validation_error(err.value)
    assert (error.status, error.param) == (400, param)
    assert error.message.startswith(param)


def test_unknown_openai_fields_are_ignored() -> None:
    assert request(frequency_penalty=0.5, user="u", metadata={"a": "b"}, n=1).model == "m"


@pytest.mark.parametrize(("messages", "param"), [
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "messages[1].role"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "messages[0].content"),
])
def test_unusable_conversations_are_bad_requests(messages: list, param: str) -> None:
    with pytest.raises(ApiError) as err:
        translate.to_query(request(messages=messages))
    assert (err.value.status, err.value.param) == (400, param)


def _task(*steps: planner_pb2.Step, answer: str = "hello there") -> planner_pb2.Task:
    return planner_pb2.Task(task_id="t1", answer=answer, steps=steps,
                            query=planner_pb2.Query(text="Tell me something nice", params={"system_prompt": "Hi"}))


def test_usage_counts_every_generation_or_estimates_what_was_not_generated() -> None:
    proposal = planner_pb2.Step(step_id="p1", kind=planner_pb2.STEP_KIND_LLM,
                                usage=planner_pb2.StepUsage(prompt_tokens=100, completion_tokens=10))
    generated = planner_pb2.Step(step_id="s1", kind=planner_pb2.STEP_KIND_LLM, cache=planner_pb2.CACHE_OUTCOME_MISS,
                                 usage=planner_pb2.StepUsage(prompt_tokens=30, completion_tokens=5,
                                                             finish_reason="length"))
    usage, source = translate.usage(_task(proposal, generated))
    assert (usage, source) == ({"prompt_tokens": 130, "completion_tokens": 15, "total_tokens": 145}, "model")
    assert translate.finish_reason(_task(generated)) == "length"
    assert translate.cache_outcome(_task(generated)) == "miss"
    hit = planner_pb2.Step(step_id="s1", kind=planner_pb2.STEP_KIND_LLM, cache=planner_pb2.CACHE_OUTCOME_HIT)
    usage, source = translate.usage(_task(hit, answer="x" * 9))
    prompt = len("Hi\nTell me something nice")
    assert source == "estimate" and usage["completion_tokens"] == 3 and usage["prompt_tokens"] == -(-prompt // 4)
    tool = planner_pb2.Step(step_id="s1", kind=planner_pb2.STEP_KIND_TOOL, cache=planner_pb2.CACHE_OUTCOME_NONE)
    usage, _ = translate.usage(_task(tool, answer="1675"))
    assert usage == {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1}
    assert translate.cache_outcome(_task(tool)) == "none" and translate.cache_outcome(_task()) == "none"


def test_tool_calls_come_back_in_openai_shape() -> None:
    calls = [{"id": "", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}, "junk"]
    step = planner_pb2.Step(step_id="s1", kind=planner_pb2.STEP_KIND_LLM,
                            usage=planner_pb2.StepUsage(finish_reason="tool_calls", tool_calls_json=json.dumps(calls)))
    task = _task(step, answer="")
    message = translate.message(task)
    assert message["content"] is None
    (call,) = message["tool_calls"]
    assert call["id"].startswith("call_") and call["function"] == {"name": "f", "arguments": '{"a": 1}'}
    assert translate.finish_reason(task) == "tool_calls"
    assert "tool_calls" not in translate.message(_task(planner_pb2.Step(step_id="s1")))


def test_grpc_statuses_map_to_http() -> None:
    assert ApiError.from_grpc(grpc.StatusCode.INVALID_ARGUMENT, "x").status == 400
    assert ApiError.from_grpc(grpc.StatusCode.NOT_FOUND, "x").status == 404
    assert ApiError.from_grpc(grpc.StatusCode.UNAVAILABLE, "x").status == 503
    assert ApiError.from_grpc(grpc.StatusCode.RESOURCE_EXHAUSTED, "x").status == 429
    late = ApiError.from_grpc(grpc.StatusCode.DEADLINE_EXCEEDED, "x")
    assert late.status == 504 and late.headers["x-should-retry"] == "false"
    assert ApiError.from_grpc(grpc.StatusCode.INTERNAL, "x").body() == {
        "error": {"message": "x", "type": "server_error", "param": None, "code": "internal_error"}}


def test_api_keys_are_stored_hashed_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    auth = ApiAuth("mesh-secret-123", path)
    assert auth.check("Bearer mesh-secret-123") == "mesh"
    key = add_key(path, "alice")
    assert key not in path.read_text() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.check(f"bearer {key}") == "alice"
    assert [r.name for r in list_keys(path)] == ["alice"]
    for header in (None, "", "Basic abc", "Bearer", f"Bearer {key}x", "Bearer mesh-secret-12"):
        with pytest.raises(ApiError) as err:
            auth.check(header)
        assert err.value.status == 401 and err.value.code == "invalid_api_key"
    with pytest.raises(ValueError, match="exists"):
        add_key(path, "alice")
    assert remove_key(path, "alice") and not remove_key(path, "alice")
    with pytest.raises(ApiError):
        auth.check(f"Bearer {key}")
    path.write_text("{broken")
    assert auth.check("Bearer mesh-secret-123") == "mesh"


@pytest.mark.parametrize("body", [
    {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 24, "llmlab": {"tools": False}},
    {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
     "stop": ["END"], "seed": 2**63 - 1, "temperature": 0, "tools": [TOOL], "stream": True,
     "cache": {"namespace": "team-a", "s-maxage": 30, "no-store": True, "min_similarity": 0.9}},
])
def test_a_body_is_parsed_and_validated_in_one_pass_as_the_general_way_would(body: dict) -> None:
    raw = json.dumps(body).encode()
    assert OpenAIApi._chat_request(raw) == ChatCompletionRequest.model_validate(json.loads(raw))
    # Past MAX_DEPTH brackets the general way (safejson, then validation) takes it, with the same result.
    padded = {**body, "metadata": {"pad": [[] for _ in range(MAX_DEPTH)]}}
    assert OpenAIApi._chat_request(json.dumps(padded).encode()) == ChatCompletionRequest.model_validate(padded)


@pytest.mark.parametrize(("raw", "code", "says"), [
    (b'{"model": "m", "messages": [', "invalid_json", "the request body is not valid JSON"),
    (b"", "invalid_json", "the request body is not valid JSON"),
    (b'[{"model": "m"}]', "invalid_json", "the request body must be a JSON object"),
    (b'"text"', "invalid_json", "the request body must be a JSON object"),
    (b'{"model": "m"}', "invalid_request", "messages: Field required"),
    (b'{"model": "m", "messages": [{"role": "robot"}]}', "invalid_request", "messages[0].role: Input should be"),
    (b'{"model": "m", "messages": [{"role": "user"}], "n": 2}', "invalid_request", "n: only n=1 is supported"),
    (b'{"model": "m", "messages": [{"role": "user"}], "x": ' + b"[" * 100 + b"]" * 100 + b"}", "invalid_json",
     "nested deeper than 64 levels"),
])
def test_a_refused_body_says_what_the_general_way_says(raw: bytes, code: str, says: str) -> None:
    with pytest.raises(ApiError) as err:
        OpenAIApi._chat_request(raw)
    assert (err.value.status, err.value.code) == (400, code)
    assert says in err.value.message


def test_a_hit_answer_and_its_headers() -> None:
    step = planner_pb2.Step(step_id="s1", kind=planner_pb2.STEP_KIND_LLM, cache=planner_pb2.CACHE_OUTCOME_SEMANTIC_HIT,
                            cache_match=planner_pb2.CacheMatch(similarity=0.93456, matched_prompt="Who painted it?"),
                            usage=planner_pb2.StepUsage(prompt_tokens=7, completion_tokens=3, finish_reason="stop"))
    task = _task(step)
    answer = translate.answer(task, "m", 1700000000)
    counted, source = translate.usage(task)
    assert answer == {"id": "chatcmpl-t1", "object": "chat.completion", "created": 1700000000, "model": "m",
                      "system_fingerprint": None, "usage": counted, "llmlab": translate.extension(task, source),
                      "choices": [{"index": 0, "message": translate.message(task), "finish_reason": "stop",
                                   "logprobs": None}]}
    assert answer["llmlab"]["steps"][0]["kind"] == "llm" and answer["llmlab"]["cache"] == "semantic-hit"
    assert translate.cache_headers(step) == {"x-llmlab-cache": "semantic-hit", "x-llmlab-cache-similarity": "0.9346",
                                             "x-llmlab-cache-matched-prompt": "Who painted it?"}
    assert translate.cache_header_pairs(step)[0] == (b"x-llmlab-cache", b"semantic-hit")
    assert translate.cache_headers(None) == {"x-llmlab-cache": "none"}
    outcomes = ((planner_pb2.CACHE_OUTCOME_HIT, "hit"), (planner_pb2.CACHE_OUTCOME_MISS, "miss"),
                (planner_pb2.CACHE_OUTCOME_BYPASS, "bypass"), (planner_pb2.CACHE_OUTCOME_UNSPECIFIED, "none"))
    for outcome, name in outcomes:
        assert translate.cache_header_pairs(planner_pb2.Step(cache=outcome)) == [(b"x-llmlab-cache", name.encode())]


def test_pinned_namespaces_follow_the_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    auth = ApiAuth("mesh-secret-123", path)
    assert auth.reserved_namespaces() == frozenset()
    alice = add_key(path, "alice", namespace="team-a")
    assert auth.reserved_namespaces() == {"team-a"}
    bob = add_key(path, "bob")
    assert auth.principal(f"Bearer {bob}").name == "bob" and auth.reserved_namespaces(refresh=False) == {"team-a"}
    remove_key(path, "alice")
    with pytest.raises(ApiError):
        auth.principal(f"Bearer {alice}")  # revoked at once: the file's stamp changed
    assert auth.reserved_namespaces(refresh=False) == frozenset()


def test_absent_or_null_extension_objects_take_their_defaults() -> None:
    for extra in ({}, {"cache": None, "llmlab": None}):
        chat = request(**extra)
        assert chat.options().tools and not chat.cache_options().no_cache
        query = translate.to_query(chat)
        assert not query.no_tools and not query.no_cache and query.HasField("cache") and query.HasField("params")
