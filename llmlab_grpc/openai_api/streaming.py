"""Planner events as ``chat.completion.chunk`` Server-Sent Events.

Order of the stream: a chunk with ``delta.role``; content deltas as the answer step's
tokens arrive (the tokens of a tool-proposal step are the model's JSON, never shown);
the text of a tool's answer in one delta when the answer step was a tool; the model's
tool calls in one delta; a last chunk with ``finish_reason`` and the ``llmlab`` trace;
with ``stream_options.include_usage`` a chunk with ``usage`` and no choices; then
``data: [DONE]``. An error after the stream began is sent as ``data: {"error": ...}``
(what OpenAI clients raise on) and the stream ends without ``[DONE]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from llmlab_grpc.openai_api import translate
from llmlab_grpc.openai_api.errors import ApiError
from llmlab_grpc.openai_api.schemas import chunk
from llmlab_grpc.proto.llmlab.v1 import planner_pb2

log = logging.getLogger(__name__)
DONE = "data: [DONE]\n\n"


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


@dataclass
class Opening:
    """What is known before the response starts: buffered events, the answer step, its cache outcome."""

    events: list[planner_pb2.AskStreamResponse] = field(default_factory=list)
    task_id: str = ""
    answer_step: str = ""
    cache: str = "none"
    headers: dict[str, str] = field(default_factory=lambda: {"x-llmlab-cache": "none"})


async def open_stream(events: AsyncIterator[planner_pb2.AskStreamResponse]) -> Opening:
    """Read events until the answer step starts (its cache outcome is then known) or the task ends.

    Errors until then raise ``ApiError`` before any byte is sent, so they keep their
    HTTP status (404, 503, ...) even for a streamed request.
    """
    opening = Opening()
    async for event in events:
        opening.events.append(event)
        opening.task_id = opening.task_id or event.task_id
        kind = event.WhichOneof("event")
        if kind == "plan_made" and event.plan_made.steps:
            opening.answer_step = event.plan_made.steps[-1].step_id
        elif kind == "step_started" and event.step_started.step_id == opening.answer_step:
            started = event.step_started
            opening.headers = translate.cache_headers(planner_pb2.Step(cache=started.cache,
                                                                       cache_match=started.cache_match))
            opening.cache = opening.headers["x-llmlab-cache"]
            break
        elif kind == "final" and event.final.status != planner_pb2.TASK_STATUS_FAILED:
            opening.headers = translate.cache_headers(translate.answer_step(event.final))
            opening.cache = opening.headers["x-llmlab-cache"]
            break  # (a failed task: the next read raises its ApiError)
    return opening


async def chunks(opening: Opening, events: AsyncIterator[planner_pb2.AskStreamResponse], model: str,
                 created: int, include_usage: bool) -> AsyncIterator[str]:
    """The SSE body: replays the buffered events, then follows the live ones."""
    cid = translate.completion_id(opening.task_id)
    streamed = False  # did the answer step's text go out already?
    yield sse(chunk(cid, created, model, {"role": "assistant", "content": ""}))

    async def all_events() -> AsyncIterator[planner_pb2.AskStreamResponse]:
        for event in opening.events:
            yield event
        async for event in events:
            yield event

    try:
        async for event in all_events():
            kind = event.WhichOneof("event")
            if kind == "token" and event.token.step_id == opening.answer_step and event.token.text:
                streamed = True
                yield sse(chunk(cid, created, model, {"content": event.token.text}))
            elif kind == "step_done" and event.step_done.step_id == opening.answer_step:
                step = event.step_done
                if not streamed and step.output and step.kind == planner_pb2.STEP_KIND_TOOL:
                    streamed = True
                    yield sse(chunk(cid, created, model, {"content": step.output}))
                calls = translate.tool_calls(step)
                if calls:
                    yield sse(chunk(cid, created, model, {"tool_calls": [
                        {"index": i, **call} for i, call in enumerate(calls)]}))
            elif kind == "final" and event.final.status != planner_pb2.TASK_STATUS_FAILED:
                task = event.final
                if not streamed and task.answer:
                    yield sse(chunk(cid, created, model, {"content": task.answer}))
                usage, _, extended = translate.trace(task)
                yield sse(chunk(cid, created, model, {}, translate.finish_reason(task), llmlab=extended))
                if include_usage:
                    yield sse(chunk(cid, created, model, None, usage=usage))
        yield DONE
    except ApiError as err:
        yield sse(err.body())
    except Exception as exc:  # a bug or a broken peer: tell the client rather than cut the stream silently
        log.exception("streamed chat completion %s failed", cid)
        yield sse(ApiError(500, f"the answer failed: {exc}", "server_error", "internal_error").body())
