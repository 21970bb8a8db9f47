"""``WorkflowManager``: runs a plan's steps as a small graph, respecting dependencies.

Steps whose dependencies are done run concurrently; a failed step fails its
dependents (recorded as skipped). Each step fills its own trace row (node, cache,
timing, error) and the manager emits stream events as things happen, so ``Ask`` and
``AskStream`` share one execution path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from llmlab_grpc.cache.entry import CachedAnswer
from llmlab_grpc.cache.keys import is_deterministic
from llmlab_grpc.mesh.peer_calls import describe_all
from llmlab_grpc.planner.cache_controls import CacheControls
from llmlab_grpc.planner.mesh_calls import Failover, MeshCallError, MeshCalls, result_text
from llmlab_grpc.proto.llmlab.v1 import cache_pb2, common_pb2, inference_pb2, planner_pb2
from llmlab_grpc.tools.convert import from_struct

Emit = Callable[[planner_pb2.AskStreamResponse], Awaitable[None]]
MessagesFrom = Callable[[dict[str, "StepResult"]], list[common_pb2.ChatMessage]]


@dataclass
class StepResult:
    """What a finished step produced."""

    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    ok: bool = True


@dataclass
class StepSpec:
    """A step to run: the trace row plus what it needs to run."""

    step: planner_pb2.Step
    tool_arguments: dict[str, Any] | None = None
    messages: MessagesFrom | None = None
    params: common_pb2.GenerationParams = field(default_factory=common_pb2.GenerationParams)
    use_cache: bool = True
    store_cache: bool = True
    controls: CacheControls = field(default_factory=CacheControls)


def cache_prompt(messages: list[common_pb2.ChatMessage]) -> str:
    """The prompt a cache key is made from: the text of a lone user turn, else the whole conversation."""
    if len(messages) == 1 and messages[0].role == "user":
        return messages[0].content
    return json.dumps([{"role": m.role, "content": m.content} for m in messages], ensure_ascii=False,
                      separators=(",", ":"))


def semantic_parts(messages: list[common_pb2.ChatMessage]) -> tuple[str, str]:
    """(the last user turn, sha256 hex of the turns before it; "" when there are none).

    What a semantic lookup compares: the question by meaning, everything before it exactly.
    A conversation that does not end with a user turn has no question: ("", "").
    """
    if not messages or messages[-1].role != "user":
        return "", ""
    earlier = messages[:-1]
    if not earlier:
        return messages[-1].content, ""
    body = json.dumps([{"role": m.role, "content": m.content, "tool_call_id": m.tool_call_id,
                        "tool_calls_json": m.tool_calls_json} for m in earlier],
                      ensure_ascii=False, separators=(",", ":"))
    return messages[-1].content, hashlib.sha256(body.encode("utf-8")).hexdigest()


def step_lookup(messages: list[common_pb2.ChatMessage], model: str, params: common_pb2.GenerationParams,
                controls: CacheControls) -> tuple[cache_pb2.CacheLookup, CacheControls]:
    """The cache lookup a generation step makes, and its controls (no semantic match without a question).

    One function for the workflow's steps and the planner's hit path, so both ask the cache the same."""
    semantic_text, context_hash = semantic_parts(messages)
    if controls.semantic and not semantic_text:
        controls = dataclasses.replace(controls, semantic=False)
    lookup = cache_pb2.CacheLookup(prompt=cache_prompt(messages), model=model, params=params,
                                   namespace=controls.namespace, semantic_text=semantic_text,
                                   context_hash=context_hash)
    return lookup, controls


_PIECE = re.compile(r"\s*\S+")
MAX_REPLAY_PIECES = 256


def replay_pieces(text: str) -> list[str]:
    """A cached answer cut into word-aligned pieces (a word with the whitespace before it), so a
    hit streams like a generation; long answers go out in at most ``MAX_REPLAY_PIECES`` pieces."""
    words = _PIECE.findall(text)
    if not words:
        return [text] if text else []
    tail = text[sum(len(w) for w in words):]  # trailing whitespace
    if tail:
        words[-1] += tail
    per = -(-len(words) // MAX_REPLAY_PIECES)
    return ["".join(words[i:i + per]) for i in range(0, len(words), per)]


def fill_from_hit(calls: MeshCalls, step: planner_pb2.Step, hit: cache_pb2.GetResponse) -> str:
    """``fill_from_answer`` from a ``Cache.Get``-shaped reply (exact or semantic)."""
    answer = CachedAnswer.of(hit.entry, hit.source_node_id)
    return fill_from_answer(calls, step, answer, hit.similarity if hit.match == "semantic" else None)


def holder_name(calls: MeshCalls, node_id: str) -> str:
    """The name of the node holding a cache entry, as a hit's trace row says it ("" when unknown)."""
    peer = calls.peers.get(node_id)
    if peer:
        return peer.info.name
    me = calls.me
    return me.name if node_id == me.node_id else ""


def fill_from_answer(calls: MeshCalls, step: planner_pb2.Step, answer: CachedAnswer,
                     similarity: float | None = None) -> str:
    """``step``'s trace row (a step not run before) written from a cache hit; returns the cached answer.

    The trace says which entry (and how similar, for a semantic hit: ``similarity`` given),
    which node held it, and the usage the generation behind the entry reported. Shared by a
    workflow's step and the planner's hit path.
    """
    semantic = similarity is not None
    step.cache = planner_pb2.CACHE_OUTCOME_SEMANTIC_HIT if semantic else planner_pb2.CACHE_OUTCOME_HIT
    match = step.cache_match
    match.key = answer.key
    match.matched_prompt = matched = answer.semantic_text or answer.prompt
    match.similarity = 1.0 if similarity is None else similarity
    match.namespace = answer.namespace
    if similarity is not None:
        step.reason += f"; semantic cache hit (similarity {similarity:.3f}) on {matched!r}"
    node_id = answer.node_id
    step.node_id = node_id
    step.node_name = holder_name(calls, node_id)
    response = answer.response
    used = step.usage
    used.prompt_tokens = answer.prompt_tokens
    used.finish_reason = answer.finish_reason or "stop"
    used.completion_tokens = answer.completion_tokens or max(1, -(-len(response) // 4))
    return response


class WorkflowManager:
    """Runs one task's steps."""

    def __init__(self, calls: MeshCalls, task: planner_pb2.Task, emit: Emit | None,
                 cache_nondeterministic: bool = False, known_miss: cache_pb2.CacheLookup | None = None) -> None:
        self.calls = calls
        self.task = task
        self.emit = emit
        self.cache_nondeterministic = cache_nondeterministic
        self.known_miss = known_miss
        """A lookup the planner's hit path already made and missed: a step making the same one
        takes the miss as it is rather than asking the cache (and its peers) twice."""
        self.results: dict[str, StepResult] = {}
        self.first_error: Any = None  # grpc.StatusCode of the first failed step, for the RPC status

    async def _event(self, **kwargs: Any) -> None:
        if self.emit is not None:  # None: a unary Ask, nobody reads events
            await self.emit(planner_pb2.AskStreamResponse(task_id=self.task.task_id, **kwargs))

    async def run(self, specs: list[StepSpec]) -> None:
        pending = {s.step.step_id: s for s in specs}
        while pending:
            ready = [s for s in pending.values() if all(d in self.results for d in s.step.depends_on)]
            if not ready:
                raise RuntimeError("plan has a dependency cycle: " + ", ".join(pending))
            if len(ready) == 1:  # the usual plan: no task to schedule for one step
                await self._run_one(ready[0])
            else:
                await asyncio.gather(*(self._run_one(s) for s in ready))
            for spec in ready:
                pending.pop(spec.step.step_id)

    async def _run_one(self, spec: StepSpec) -> None:
        step = spec.step
        step.started_at.FromNanoseconds(time.time_ns())
        t0 = time.perf_counter()
        failed_dep = next((d for d in step.depends_on if not self.results[d].ok), None)
        try:
            if failed_dep is not None:
                raise MeshCallError(None, f"skipped: step {failed_dep} failed")
            if step.kind == planner_pb2.STEP_KIND_TOOL:
                result = await self._run_tool(spec)
            else:
                result = await self._run_llm(spec)
        except MeshCallError as exc:
            step.error = exc.message
            result = StepResult(ok=False)
            self.first_error = self.first_error or exc.code
        step.duration_ms = (time.perf_counter() - t0) * 1000
        step.output = result.text if result.ok else ""
        self.results[step.step_id] = result
        self._record(step)
        await self._event(step_done=step)

    def _record(self, step: planner_pb2.Step) -> None:
        for existing in self.task.steps:
            if existing.step_id == step.step_id:
                existing.CopyFrom(step)
                return
        self.task.steps.append(step)

    async def _run_tool(self, spec: StepSpec) -> StepResult:
        step = spec.step
        step.cache = planner_pb2.CACHE_OUTCOME_NONE
        await self._event(step_started=planner_pb2.StepStarted(step_id=step.step_id))
        reply = await self.calls.execute_tool(step.name, spec.tool_arguments or {}, self.task.task_id)
        step.node_id = reply.node_id
        step.node_name = reply.node_name
        step.failed_over.extend(reply.failed_over)
        if reply.HasField("error") and reply.error.code:
            raise MeshCallError(None, f"{step.name} failed: {reply.error.code}: {reply.error.message}")
        data = from_struct(reply.result)
        await self._event(tool_result=planner_pb2.ToolResult(step_id=step.step_id, result=reply.result))
        return StepResult(text=result_text(step.name, data), data=data)

    async def replay(self, step: planner_pb2.Step, hit: cache_pb2.GetResponse) -> StepResult:
        """Answer ``step`` from a cache hit (``fill_from_hit``); to a stream, the text goes out in
        word-aligned pieces ending with the usage the generation behind the entry reported."""
        text = fill_from_hit(self.calls, step, hit)
        if self.emit is not None:  # a stream: the answer goes out in pieces, like a generation
            await self._event(step_started=planner_pb2.StepStarted(step_id=step.step_id, node_id=step.node_id,
                                                                   cache=step.cache, cache_match=step.cache_match))
            for piece in replay_pieces(text):
                await self._event(token=planner_pb2.TokenDelta(step_id=step.step_id, text=piece))
                await asyncio.sleep(0)  # let the stream's reader send each piece as it comes
        return StepResult(text=text, data={"finish_reason": step.usage.finish_reason, "tool_calls_json": ""})

    async def _run_llm(self, spec: StepSpec) -> StepResult:
        step = spec.step
        assert spec.messages is not None
        messages = spec.messages(self.results)
        lookup, controls = step_lookup(messages, step.name, spec.params, spec.controls)
        cacheable = is_deterministic(spec.params) or self.cache_nondeterministic
        if not spec.use_cache:
            step.cache = planner_pb2.CACHE_OUTCOME_BYPASS
        elif not self.calls.has_cache():
            step.cache = planner_pb2.CACHE_OUTCOME_NONE
        else:
            hit = None
            if cacheable and (self.known_miss is None or lookup != self.known_miss):
                hit = await self.calls.cache_get(lookup, controls)
            if hit is not None:
                return await self.replay(step, hit)
            step.cache = planner_pb2.CACHE_OUTCOME_MISS if cacheable else planner_pb2.CACHE_OUTCOME_BYPASS
            if not cacheable and "not cached" not in step.reason:
                step.reason += "; not cached: sampling is random (temperature > 0 and no seed)"
        parts: list[str] = []
        usage: inference_pb2.Usage | None = None
        failed_over: list[Failover] = []
        started = False
        try:
            async for cand, chunk in self.calls.generate(step.name, messages, spec.params, failed_over):
                if not started:
                    started = True
                    step.node_id, step.node_name = cand.node_id, cand.name
                    await self._event(step_started=planner_pb2.StepStarted(
                        step_id=step.step_id, node_id=cand.node_id, cache=step.cache))
                if chunk.HasField("usage"):
                    usage = chunk.usage
                    if chunk.usage.node_id:
                        step.node_id = chunk.usage.node_id
                elif chunk.text:
                    parts.append(chunk.text)
                    await self._event(token=planner_pb2.TokenDelta(step_id=step.step_id, text=chunk.text))
        finally:  # the trace says which nodes were left and why, whether or not another answered
            step.failed_over.extend(f.node_id for f in failed_over)
            if failed_over:
                step.reason += "; failed over: " + describe_all(failed_over)
        text = "".join(parts)
        complete = usage is not None  # a final usage message arrived: the stream was not cut off
        if usage is not None:
            step.usage.CopyFrom(planner_pb2.StepUsage(
                prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                finish_reason=usage.finish_reason, tool_calls_json=usage.tool_calls_json))
        # The cache holds text only: an answer made of tool calls would come back without them.
        if (complete and not step.usage.tool_calls_json and spec.store_cache and cacheable
                and step.cache == planner_pb2.CACHE_OUTCOME_MISS):
            stored = await self.calls.cache_put(lookup, text, controls, common_pb2.CachedUsage(
                prompt_tokens=step.usage.prompt_tokens, completion_tokens=step.usage.completion_tokens,
                finish_reason=step.usage.finish_reason))
            if stored is not None:
                step.cache_copies, step.cache_copies_target = stored
        return StepResult(text=text, data={"finish_reason": step.usage.finish_reason,
                                           "tool_calls_json": step.usage.tool_calls_json})
