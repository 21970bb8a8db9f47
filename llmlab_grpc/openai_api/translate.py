"""OpenAI chat requests to planner ``Query``s, and finished ``Task``s back to OpenAI answers.

Request side: the last message (the user's) is the query text; leading system/developer
messages become the system prompt; every other turn is history, with assistant tool
calls and tool results kept. A conversation that ends with tool results (the second
half of function calling) is all history and an empty text: the model continues it.
``tools`` pass through to the model as ``params.tools_json`` with ``no_tools`` set, so
the planner does not route to a mesh tool behind the caller's back;
``"llmlab": {"tools": false}`` sets ``no_tools`` alone.
Cache controls come from the body's ``cache`` object in LiteLLM's shape (``namespace``,
``ttl``, ``s-maxage``, ``no-cache``, ``no-store``; llmlab adds ``semantic`` and
``min_similarity``) and from ``Cache-Control`` request headers: ``no-cache`` skips the
cache, ``no-store`` only stops storing, ``max-age=N`` / ``s-maxage=N`` accept only answers
at most N seconds old. The namespace is the caller's to choose unless its API key is
pinned to one (``auth.Principal``).

Answer side: the *answer step* is the last step of the trace (a proposal step, when the
planner asked the model to pick a tool, comes before the plan). Usage is what the llm
nodes counted for every generation of the request; when the answer itself was not
generated (a cache hit, a tool's result) its tokens are estimated as ceil(chars / 4)
and ``llmlab.usage`` says ``"estimate"`` instead of ``"model"``.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any
from urllib.parse import quote

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from llmlab_grpc.openai_api.auth import MESH, Principal
from llmlab_grpc.openai_api.errors import bad_request
from llmlab_grpc.openai_api.schemas import ChatCompletionRequest, completion
from llmlab_grpc.proto.llmlab.v1 import common_pb2, planner_pb2

CHARS_PER_TOKEN = 4
_NO_DIRECTIVES: frozenset[str] = frozenset()


def parse_cache_control(header: str) -> tuple[set[str], float | None]:
    """(directives without a value, the max age in seconds or None) of a ``Cache-Control`` header.

    ``max-age`` and ``s-maxage`` both bound the age of a cached answer (the smaller wins);
    a malformed value is a 400 naming the header.
    """
    flags: set[str] = set()
    max_age: float | None = None
    if not header:
        return flags, max_age
    for part in header.split(",")[:32]:
        name, sep, value = part.strip().lower().partition("=")
        name = name.strip()
        if not name:
            continue
        if name in ("max-age", "s-maxage") and sep:
            value = value.strip().strip('"')
            if not value.isdigit() or len(value) > 10:
                raise bad_request(f"Cache-Control {name}={value[:20]!r}: give whole seconds, e.g. {name}=60",
                                  "Cache-Control")
            max_age = float(value) if max_age is None else min(max_age, float(value))
        else:
            flags.add(name)
    return flags, max_age


def to_query(request: ChatCompletionRequest, cache_control: str = "", principal: Principal | None = None,
             reserved_namespaces: frozenset[str] = frozenset()) -> planner_pb2.Query:
    """The planner query for ``request``; ``ApiError`` (400) names a message it cannot use, 403 a
    namespace the caller's key may not use."""
    messages = request.messages
    texts: list[str] = []
    for i, message in enumerate(messages):
        try:
            texts.append(message.text(i))
        except ValueError as exc:
            raise bad_request(str(exc), f"messages[{i}].content") from exc
    last = len(messages) - 1
    if messages[last].role not in ("user", "tool"):
        raise bad_request(f"the last message has role {messages[last].role!r}; it must be the user's (or a tool "
                          "result, to continue a function call): llmlab answers the newest user turn",
                          f"messages[{last}].role")
    continuation = messages[last].role == "tool"  # text stays empty: the model continues the call
    system: list[str] = []
    start = 0
    while start < last and messages[start].role in ("system", "developer"):
        system.append(texts[start])
        start += 1
    directives, max_age = parse_cache_control(cache_control) if cache_control else (_NO_DIRECTIVES, None)
    options = request.cache_options()
    llmlab = request.options()
    tools = request.function_tools()
    # Scalars through the constructor, sub-message fields set one by one: both are cheaper than
    # setting scalars after construction or handing sub-messages over as dicts.
    query = planner_pb2.Query(
        text="" if continuation else texts[last], model=request.model,
        cache_nondeterministic=llmlab.cache_nondeterministic, no_tools=bool(tools) or not llmlab.tools,
        no_cache="no-cache" in directives or options.no_cache, no_store="no-store" in directives or options.no_store)
    if start < last or continuation:
        query.history.extend(_turn(messages[i], texts[i]) for i in range(start, last + 1 if continuation else last))
    params = query.params
    params.system_prompt = "\n\n".join(s for s in system if s) if system else ""  # always set: params present
    if request.temperature is not None:
        params.temperature = request.temperature
    if request.top_p is not None:
        params.top_p = request.top_p
    if (limit := request.token_limit()) is not None:
        params.max_tokens = min(limit, 2**31 - 1)
    if request.seed is not None:
        params.seed = request.seed
    if request.stop is not None:
        params.stop.extend(request.stop_list())
    if tools:
        params.tools_json = json.dumps(tools, separators=(",", ":"), sort_keys=True)
    principal = principal or MESH
    control = query.cache
    control.namespace = principal.cache_namespace(options.namespace, reserved_namespaces)  # always set: present
    if principal.per_user:
        control.writer = principal.name
    if options.ttl is not None:
        control.ttl_s = options.ttl
    if max_age is not None or options.s_maxage is not None:
        control.max_age_s = min(a for a in (max_age, options.s_maxage) if a is not None)
    if options.semantic is not None:
        control.semantic = options.semantic
    if options.min_similarity is not None:
        control.min_similarity = options.min_similarity
    return query


def _turn(message: Any, text: str) -> common_pb2.ChatMessage:
    role = "system" if message.role == "developer" else message.role
    turn = common_pb2.ChatMessage(role=role, content=text, tool_call_id=message.tool_call_id or "")
    if message.tool_calls:
        turn.tool_calls_json = json.dumps([c.model_dump() for c in message.tool_calls], separators=(",", ":"))
    return turn


# --- answers -------------------------------------------------------------------------------


def approx_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def answer_step(task: planner_pb2.Task) -> planner_pb2.Step | None:
    return task.steps[-1] if task.steps else None


def _names(enum: EnumTypeWrapper, prefix: str) -> dict[int, str]:
    """Every value of ``enum`` → its name without ``prefix``, lower case (a dict read, not ``Name()``, per answer)."""
    return {value: name.removeprefix(prefix).lower() for name, value in enum.items()}


def _name(enum: EnumTypeWrapper, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


_STEP_KINDS = _names(planner_pb2.StepKind, "STEP_KIND_")
_OUTCOMES = {value: name.replace("_", "-")
             for value, name in _names(planner_pb2.CacheOutcome, "CACHE_OUTCOME_").items()}
_OUTCOMES[planner_pb2.CACHE_OUTCOME_UNSPECIFIED] = "none"
_OUTCOME_HEADERS = {value: (b"x-llmlab-cache", name.encode()) for value, name in _OUTCOMES.items()}
_NO_OUTCOME_HEADER = (b"x-llmlab-cache", b"none")
_HITS = (planner_pb2.CACHE_OUTCOME_HIT, planner_pb2.CACHE_OUTCOME_SEMANTIC_HIT)
_HIT_NAMES = tuple(_OUTCOMES[value] for value in _HITS)
_LLM = _STEP_KINDS[planner_pb2.STEP_KIND_LLM]


def outcome_name(outcome: int) -> str:
    """hit, semantic-hit, miss, bypass or none: a ``CacheOutcome`` as the ``x-llmlab-cache`` header says it."""
    name = _OUTCOMES.get(outcome)
    return name if name is not None else _name(planner_pb2.CacheOutcome, outcome, "CACHE_OUTCOME_").replace("_", "-")


def cache_outcome(task: planner_pb2.Task) -> str:
    """hit, semantic-hit, miss, bypass or none: how the cache took part in the answer step."""
    step = answer_step(task)
    return "none" if step is None else outcome_name(step.cache)


def is_hit(step: planner_pb2.Step | None) -> bool:
    return step is not None and step.cache in _HITS


def cache_headers(step: planner_pb2.Step | None) -> dict[str, str]:
    """``x-llmlab-cache`` and, for a semantic hit, its similarity and the question it matched."""
    return {name.decode(): value.decode() for name, value in cache_header_pairs(step)}


def cache_header_pairs(step: planner_pb2.Step | None) -> list[tuple[bytes, bytes]]:
    """``cache_headers`` as the raw ``(name, value)`` pairs of an ASGI response (the outcome's pair is made once)."""
    if step is None:
        return [_NO_OUTCOME_HEADER]
    cache = step.cache
    pair = _OUTCOME_HEADERS.get(cache) or (b"x-llmlab-cache", outcome_name(cache).encode())
    if cache != planner_pb2.CACHE_OUTCOME_SEMANTIC_HIT:
        return [pair]
    match = step.cache_match
    return [pair, (b"x-llmlab-cache-similarity", f"{match.similarity:.4f}".encode()),
            (b"x-llmlab-cache-matched-prompt", quote(match.matched_prompt[:512], safe=" ?!,.'").encode())]


def tool_calls(step: planner_pb2.Step | None) -> list[dict[str, Any]]:
    """The model's tool calls in OpenAI's shape (ids filled in, arguments as a JSON string)."""
    raw = step.usage.tool_calls_json if step is not None and step.HasField("usage") else ""
    try:
        calls = json.loads(raw) if raw else []
    except ValueError:
        return []
    out = []
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, dict):
            continue
        given = call.get("function")
        function = given if isinstance(given, dict) else {}
        arguments = function.get("arguments", "")
        out.append({
            "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": str(function.get("name", "")),
                         "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)},
        })
    return out


def finish_reason(task: planner_pb2.Task) -> str:
    step = answer_step(task)
    return _finish_reason(tool_calls(step), step.usage.finish_reason if step is not None and step.HasField("usage")
                          else "")


def _finish_reason(calls: list[dict[str, Any]], generation_finish: str) -> str:
    """tool_calls, length (the generation hit its token limit) or stop."""
    return "tool_calls" if calls else "length" if generation_finish == "length" else "stop"


def prompt_text(query: planner_pb2.Query) -> str:
    return "\n".join([query.params.system_prompt, *(t.content for t in query.history), query.text])


def usage(task: planner_pb2.Task) -> tuple[dict[str, int], str]:
    """The ``usage`` block and where its numbers come from: "model", "cache" or "estimate"."""
    return _usage(task, [step_row(s) for s in task.steps])


def _usage(task: planner_pb2.Task, rows: list[dict[str, Any]]) -> tuple[dict[str, int], str]:
    """``usage`` from the steps' trace rows (each protobuf field is read once per answer, by ``step_row``)."""
    prompt = completion = 0
    for row in rows:
        counted = row.get("usage")
        if counted is not None:
            prompt += counted["prompt_tokens"]
            completion += counted["completion_tokens"]
    last = rows[-1] if rows else None
    last_usage = None if last is None else last.get("usage")
    source = "model"
    if last is not None and last_usage is not None and last["cache"] in _HIT_NAMES:
        source = "cache"  # what the generation behind the cached answer reported
        if not last_usage["prompt_tokens"]:
            prompt += approx_tokens(prompt_text(task.query))
    elif last_usage is None:
        source = "estimate"
        completion += approx_tokens(task.answer)
        if last is not None and last["kind"] == _LLM:  # a cache hit: a model read it once
            prompt += approx_tokens(prompt_text(task.query))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}, source


def step_row(step: planner_pb2.Step) -> dict[str, Any]:
    kind, cache = step.kind, step.cache
    row: dict[str, Any] = {
        "step_id": step.step_id,
        "kind": _STEP_KINDS.get(kind) or _name(planner_pb2.StepKind, kind, "STEP_KIND_"),
        "name": step.name,
        "node_id": step.node_id,
        "node_name": step.node_name,
        "reason": step.reason,
        "cache": outcome_name(cache),
        "duration_ms": round(step.duration_ms, 2),
    }
    if cache in _HITS:
        match = step.cache_match
        row["cache_match"] = {"key": match.key, "matched_prompt": match.matched_prompt,
                              "similarity": round(match.similarity, 4), "namespace": match.namespace}
    if error := step.error:
        row["error"] = error
    if failed_over := step.failed_over:
        row["failed_over"] = list(failed_over)
    if step.HasField("usage"):
        counted = step.usage
        row["usage"] = {"prompt_tokens": counted.prompt_tokens, "completion_tokens": counted.completion_tokens,
                        "finish_reason": counted.finish_reason}
    return row


def extension(task: planner_pb2.Task, usage_source: str) -> dict[str, Any]:
    """The ``llmlab`` field of an answer: the task and its execution trace."""
    return _extension(task, [step_row(s) for s in task.steps], usage_source)


def _extension(task: planner_pb2.Task, rows: list[dict[str, Any]], usage_source: str) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "planner_node_id": task.planner_node_id,
        "cache": rows[-1]["cache"] if rows else "none",
        "usage": usage_source,
        "total_ms": round(task.total_ms, 2),
        "steps": rows,
    }


def trace(task: planner_pb2.Task) -> tuple[dict[str, int], str, dict[str, Any]]:
    """``usage``, its source and ``extension`` of a finished task, its steps read once for all three."""
    rows = [step_row(s) for s in task.steps]
    counted, source = _usage(task, rows)
    return counted, source, _extension(task, rows, source)


def message(task: planner_pb2.Task) -> dict[str, Any]:
    return _message(task.answer, tool_calls(answer_step(task)))


def _message(answer: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": answer if answer or not calls else None, "refusal": None}
    if calls:
        out["tool_calls"] = calls
    return out


def answer(task: planner_pb2.Task, model: str, created: int) -> dict[str, Any]:
    """The ``chat.completion`` of a finished task (each field of its steps read once)."""
    counted, _, extended = trace(task)
    step = answer_step(task)
    calls = tool_calls(step)
    rows = extended["steps"]
    last_usage = rows[-1].get("usage") if rows else None
    reason = _finish_reason(calls, last_usage["finish_reason"] if last_usage else "")
    return completion(completion_id(task.task_id), created, model, _message(task.answer, calls), reason, counted,
                      extended)


def completion_id(task_id: str) -> str:
    return f"chatcmpl-{task_id}"
