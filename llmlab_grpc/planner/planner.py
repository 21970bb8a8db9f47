"""``Planner``: from a query to a plan, run by the WorkflowManager, kept in the task store.

Order of decisions (each recorded as the step's reason):
1. deterministic rules (rules.py): arithmetic → calculator, search → web_search, URL → browser;
   when the query asks for more than the value, a model step phrases the tool's result;
2. when the query looks like it may need a tool, the model is shown the tools' JSON Schemas
   and may propose one call, validated before it runs (proposal.py); anything invalid falls
   back to plain generation with the reason in the trace;
3. plain generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import time
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from llmlab_grpc.cache.entry import CachedAnswer
from llmlab_grpc.cache.keys import cache_key_of_raw, is_deterministic
from llmlab_grpc.limits import MAX_QUERY_BYTES
from llmlab_grpc.planner import cache_controls
from llmlab_grpc.planner.cache_controls import CacheControls
from llmlab_grpc.planner.hit_wire import HitTemplate, HitTemplates, WrittenHit
from llmlab_grpc.planner.mesh_calls import MeshCallError, MeshCalls
from llmlab_grpc.planner.prelude import Prelude, QueryMemo
from llmlab_grpc.planner.proposal import MAX_PROPOSAL_TOKENS, parse_proposal, proposal_messages
from llmlab_grpc.planner.rules import RouteHints, route_hints
from llmlab_grpc.planner.tasks import TaskStore, digest_of, preview_query
from llmlab_grpc.planner.workflow import (
    Emit,
    MessagesFrom,
    StepResult,
    StepSpec,
    WorkflowManager,
    fill_from_answer,
    fill_from_hit,
    holder_name,
    step_lookup,
)
from llmlab_grpc.proto.llmlab.v1 import cache_pb2, common_pb2, planner_pb2

if TYPE_CHECKING:
    from llmlab_grpc.config import NamespacePolicy
    from llmlab_grpc.ports import Gauge

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 32_000
RULES_INLINE_CHARS = 2_000
"""Texts up to this length are matched against the rules on the event loop (microseconds);
longer ones in a worker thread, so no query holds the loop that serves every other call."""
RULES_BUDGET_S = 2.0
"""How long the planner waits for the rules on one text before it plans without them."""
MAX_HISTORY_TURNS = 64
DEFAULT_TEMPERATURE = 0.7
DEFAULT_SEED = 42
PHRASE_SYSTEM = "Answer the user's question in one or two sentences using the tool result given. Do not recompute it."


class QueryError(ValueError):
    """The query itself is unusable (INVALID_ARGUMENT)."""


class TaskFailed(Exception):
    """A task ended without an answer; ``code`` is the gRPC status that says why."""

    def __init__(self, task: planner_pb2.Task, code: grpc.StatusCode) -> None:
        self.task = task
        self.code = code
        self.message = f"{task.error} (task {task.task_id})"
        super().__init__(self.message)


def effective_params(query: planner_pb2.Query) -> common_pb2.GenerationParams:
    """The caller's params, with a fixed seed by default so the same question is cacheable."""
    params = common_pb2.GenerationParams()
    params.CopyFrom(query.params)
    if not params.HasField("temperature") and not params.HasField("seed"):
        params.temperature = DEFAULT_TEMPERATURE
        params.seed = DEFAULT_SEED
    return params


def continues_tool_call(query: planner_pb2.Query) -> bool:
    """No new text after a tool result: the model is to continue the function call (OpenAI's second turn)."""
    return not query.text.strip() and bool(query.history) and query.history[-1].role == "tool"


def query_controls(query: planner_pb2.Query, settings: object) -> CacheControls:
    """The query's cache controls resolved against the node's namespace policies (QueryError when unusable)."""
    try:
        return cache_controls.resolve(query, settings)
    except ValueError as exc:
        raise QueryError(str(exc)) from exc


def validate_query(query: planner_pb2.Query, size: int | None = None) -> None:
    """QueryError saying what is wrong with ``query`` (``size``: its encoded bytes, when known)."""
    if not query.text.strip() and not continues_tool_call(query):
        raise QueryError("the query text is empty: ask something, e.g. 'What is 25 * 67?'")
    if len(query.text) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is {len(query.text)} characters; the limit is {MAX_QUERY_CHARS}")
    if len(query.history) > MAX_HISTORY_TURNS:
        raise QueryError(f"history has {len(query.history)} turns; the limit is {MAX_HISTORY_TURNS}")
    if size is None:
        size = query.ByteSize()
    if size > MAX_QUERY_BYTES:
        raise QueryError(f"the query with its history and params is {size} bytes; the limit is {MAX_QUERY_BYTES}")
    params = query.params
    if params.HasField("temperature") and not 0.0 <= params.temperature <= 2.0:
        raise QueryError("temperature must be between 0 and 2")
    if params.HasField("top_p") and not 0.0 < params.top_p <= 1.0:
        raise QueryError("top_p must be in (0, 1]")
    if params.HasField("max_tokens") and params.max_tokens < 1:
        raise QueryError("max_tokens must be at least 1")


async def hints_off_loop(text: str) -> RouteHints:
    """``route_hints(text)``: inline for a short text, else in a thread within ``RULES_BUDGET_S``.

    The rules are linear in the text, so the budget only trips on a starved machine; then the
    query is planned as if no rule matched, and the trace says why.
    """
    if len(text) <= RULES_INLINE_CHARS:
        return route_hints(text)
    try:
        return await asyncio.wait_for(asyncio.to_thread(route_hints, text), RULES_BUDGET_S)
    except TimeoutError:
        log.warning("the planner's rules took over %.1f s on a %d-character query", RULES_BUDGET_S, len(text))
        return RouteHints(rule=None, toolish=False,
                          note=f"the deterministic rules took over {RULES_BUDGET_S:g} s on this "
                               f"{len(text)}-character query and were skipped")


def stamp_now(stamp: Any) -> None:
    """``stamp.FromNanoseconds(time.time_ns())`` (a ``Timestamp``) without the well-known type's Python."""
    stamp.seconds, stamp.nanos = divmod(time.time_ns(), 1_000_000_000)


def _step(step_id: str, kind: planner_pb2.StepKind, name: str, reason: str, depends_on: list[str] | None = None
          ) -> planner_pb2.Step:
    return planner_pb2.Step(step_id=step_id, kind=kind, name=name, reason=reason, depends_on=depends_on or [])


PLAIN_REASON = "no tool needed: plain generation"
MEMO_MAX_MODEL_CHARS = 256
"""Models named longer than this get their hit step encoded afresh (``hit_step_head``)."""


def _encode_hit_step(model: str) -> bytes:
    step = planner_pb2.Step(step_id="s1", kind=planner_pb2.STEP_KIND_LLM, name=model, reason=PLAIN_REASON)
    return planner_pb2.Task(steps=[step]).SerializeToString()


_remembered_hit_step = functools.lru_cache(maxsize=64)(_encode_hit_step)


def hit_step_head(model: str) -> bytes:
    """A ``Task`` holding only the hit path's step (``s1``, plain generation on ``model``), encoded:
    appended to a task's bytes it adds that step, the one ``_plan`` would make."""
    return _remembered_hit_step(model) if len(model) <= MEMO_MAX_MODEL_CHARS else _encode_hit_step(model)


class PlannerSettings(Protocol):
    """The settings the planner reads (``NodeSettings`` fits): the task store's budget and the
    cache defaults a query's controls fall back on (``cache_controls.resolve``)."""

    @property
    def planner_tasks_max_bytes(self) -> int: ...

    @property
    def cache_namespaces(self) -> Mapping[str, NamespacePolicy]: ...

    @property
    def semantic_cache(self) -> bool: ...

    @property
    def semantic_min_similarity(self) -> float: ...


class Planner:
    """Plans and runs queries for one node.

    ``settings`` are read for the cache namespace policies (``cache_controls``) and the task
    store's budget; ``tasks`` is the node's ``planner_tasks`` load counter, written only here.
    """

    def __init__(self, calls: MeshCalls, settings: PlannerSettings, tasks: Gauge, store: TaskStore | None = None
                 ) -> None:
        self.calls = calls
        self.settings = settings
        self.tasks = tasks
        self.store = store or TaskStore(max_bytes=settings.planner_tasks_max_bytes)
        self.memo = QueryMemo()
        """What each recent query's bytes alone decide (``prelude.py``): a query asked again skips it."""
        self.request_memo = QueryMemo()
        """The same by the bytes of the ``AskRequest`` a query came in (``ask_encoded``); apart from
        ``memo``, as an encoded request can equal an encoded query of another text."""
        self.hit_templates = HitTemplates()
        """Exact hits' tasks serialized but for their ids and times (``hit_wire.py``)."""

    def _user_messages(self, query: planner_pb2.Query, text: str) -> list[common_pb2.ChatMessage]:
        # No system turn here: params.system_prompt travels with the request and the llm node puts it first.
        messages = list(query.history)
        if text:
            messages.append(common_pb2.ChatMessage(role="user", content=text))
        return messages

    async def _prelude(self, query: planner_pb2.Query, request: bytes | None = None) -> Prelude:
        """``query`` validated, hashed, previewed and its hit-path verdict: remembered by its bytes.

        ``request``: the bytes ``query`` was parsed from (an ``AskRequest``), when the caller has
        them: remembered by those too, so a repeated request is not even encoded again. Raises
        ``QueryError`` for an unusable query (never remembered).
        """
        if request is not None:
            found = self.request_memo.get(request)
            if found is None:
                found = await self._prelude(query)
                self.request_memo.put(request, found)
            return found
        raw = query.SerializeToString(deterministic=True)
        found = self.memo.get(raw)
        if found is not None:
            return found
        validate_query(query, len(raw))
        kept, cut = preview_query(query, len(raw))  # the task (and the task store) keep a preview, never the whole
        # hashlib lets go of the GIL on large inputs: a long query is hashed off the event loop.
        digest = await asyncio.to_thread(digest_of, raw) if cut else digest_of(raw)
        head = planner_pb2.Task(query=kept, status=planner_pb2.TASK_STATUS_RUNNING,
                                planner_node_id=self.calls.me.node_id, query_sha256=digest, query_truncated=cut)
        params = effective_params(query)
        text = query.text.strip()
        hints: RouteHints | None = None
        hit_path = (not query.no_cache and not continues_tool_call(query)
                    and (is_deterministic(params) or query.cache_nondeterministic))
        if hit_path and not query.no_tools:
            if len(text) > RULES_INLINE_CHARS:
                hit_path = False  # the rules run in a thread on the general path
            else:
                found_hints = route_hints(text)
                hit_path = found_hints.rule is None and not found_hints.toolish and not found_hints.note
                hints = found_hints if hit_path else None
        prelude = Prelude(task_head=head.SerializeToString(), text=text, params=params,
                          params_raw=params.SerializeToString(deterministic=True), hints=hints, hit_path=hit_path,
                          lone_turn=not query.history)
        self.memo.put(raw, prelude)
        return prelude

    async def ask(self, query: planner_pb2.Query, emit: Emit | None = None
                  ) -> tuple[planner_pb2.Task, grpc.StatusCode | None]:
        """Plan and run ``query``; events go to ``emit`` (``None``: nobody listens, none are made).

        Returns the finished task and, when it failed, the gRPC status that says why.
        """
        task, status, hit = await self._ask(query, emit)
        if hit is not None:
            task = planner_pb2.Task.FromString(hit.encoded)
            self.store.save(task, len(hit.encoded))
        assert task is not None
        return task, status

    async def ask_written(self, query: planner_pb2.Query, request: bytes | None = None
                          ) -> tuple[planner_pb2.Task | WrittenHit, grpc.StatusCode | None]:
        """``ask`` with nobody listening, for a caller that can use an exact cache hit as it was
        written (``hit_wire.WrittenHit``: its task's bytes and template) rather than a message:
        the OpenAI API, which answers it from a template of its own (``openai_api/hit_answers.py``).
        ``request``: the bytes of an ``AskRequest`` holding ``query``, when the caller has them
        (they key the query's prelude, as in ``ask_encoded``)."""
        task, status, hit = await self._ask(query, None, request)
        if hit is not None:
            self.store.save_encoded(hit.task_id, hit.encoded)
            return hit, None
        assert task is not None
        return task, status

    async def ask_encoded(self, query: planner_pb2.Query, request: bytes
                          ) -> tuple[planner_pb2.Task | None, grpc.StatusCode | None, bytes]:
        """``ask`` for a caller that sends the task on as bytes (``Planner.Ask``): the task (None for
        an exact cache hit, whose task is only ever written as bytes: ``hit_wire.py``), the status,
        and the task encoded. ``request``: the bytes ``query`` was parsed from (its ``AskRequest``),
        which key the query's prelude. A hit's task is encoded once, for the task store and the reply."""
        task, status, hit = await self._ask(query, None, request)
        if hit is not None:
            self.store.save_encoded(hit.task_id, hit.encoded)
            return None, None, hit.encoded
        assert task is not None
        return task, status, task.SerializeToString()

    async def _ask(self, query: planner_pb2.Query, emit: Emit | None, request: bytes | None = None
                   ) -> tuple[planner_pb2.Task | None, grpc.StatusCode | None, WrittenHit | None]:
        """``ask``, but an exact hit answered without a workflow comes back as written (not stored:
        the caller keeps it in the task store as it uses it), with no task."""
        status: grpc.StatusCode | None = None
        prelude = self.request_memo.get(request) if request is not None else None
        if prelude is None:  # (a repeated request is found without a coroutine)
            prelude = await self._prelude(query, request)
        controls = query_controls(query, self.settings)
        model = ""
        if emit is None and prelude.hit_path and self.calls.local_cache is not None:
            model = query.model or self.calls.default_model()
        task_id = os.urandom(8).hex()  # what secrets.token_hex(8) returns, with less Python
        created_ns = time.time_ns()
        known_miss: cache_pb2.CacheLookup | None = None
        t0 = time.perf_counter()
        if model and prelude.lone_turn and not controls.semantic:
            # Nobody listens and the step's key is made of the text alone (``cache_prompt``): a hit
            # in this node's cache is answered without a workflow, its task written as bytes.
            self.tasks.add(1)
            try:
                hit, known_miss = await self._hit_written(query, prelude, controls, model, task_id, created_ns, t0)
            finally:
                self.tasks.add(-1)
            if hit is not None:
                return None, None, hit
            model = ""  # a miss: the workflow plans it (and does not look it up again)
        task = planner_pb2.Task()
        # The query's preview, digest, status and planner node; with a model, the hit path's step too.
        task.MergeFromString(prelude.task_head + hit_step_head(model) if model else prelude.task_head)
        task.task_id = task_id
        created = task.created_at
        created.seconds, created.nanos = divmod(created_ns, 1_000_000_000)
        if model:  # nobody listens: a hit in this node's cache is answered without a workflow
            self.tasks.add(1)
            try:
                known_miss = await self._answer_from_cache(query, prelude, controls, task, model)
            finally:
                self.tasks.add(-1)
            if known_miss is None and task.status == planner_pb2.TASK_STATUS_SUCCEEDED:
                task.total_ms = (time.perf_counter() - t0) * 1000
                self.store.save(task)
                return task, None, None
        self.store.save(task)
        self.tasks.add(1)
        try:
            workflow = WorkflowManager(self.calls, task, emit, cache_nondeterministic=query.cache_nondeterministic,
                                       known_miss=known_miss)
            specs = await self._plan(query, controls, workflow, prelude.hints)
            if emit is not None:
                await emit(planner_pb2.AskStreamResponse(task_id=task.task_id,
                                                         plan_made=planner_pb2.PlanMade(steps=[s.step for s in specs])))
            for spec in specs:
                task.steps.append(spec.step)
            await workflow.run(specs)
            last = workflow.results.get(specs[-1].step.step_id, StepResult(ok=False))
            if last.ok:
                task.status = planner_pb2.TASK_STATUS_SUCCEEDED
                task.answer = last.text.strip()
            else:
                task.status = planner_pb2.TASK_STATUS_FAILED
                task.error = next((s.error for s in task.steps if s.error), "the plan failed")
                status = workflow.first_error or grpc.StatusCode.FAILED_PRECONDITION
        except MeshCallError as exc:
            task.status = planner_pb2.TASK_STATUS_FAILED
            task.error = exc.message
            status = exc.code or grpc.StatusCode.FAILED_PRECONDITION
        finally:
            self.tasks.add(-1)
        task.total_ms = (time.perf_counter() - t0) * 1000
        self.store.save(task)
        return task, status, None

    async def _hit_written(self, query: planner_pb2.Query, prelude: Prelude, controls: CacheControls, model: str,
                           task_id: str, created_ns: int, t0: float
                           ) -> tuple[WrittenHit | None, cache_pb2.CacheLookup | None]:
        """A hit's task, serialized (``hit_wire.py``), for a query whose one user turn is the whole
        conversation (``prelude.lone_turn``) and whose lookup is exact; or, on a miss, None and the
        lookup (the workflow's step does not ask again).

        The same conditions, lookup and task as ``_answer_from_cache``'s: the step's key is made
        of the text (``cache_prompt``), looked up in this node's own cache
        (``MeshCalls.cache_get_key``), and the task is the one ``_hit_task`` builds, written from
        a template kept per query, model and cached answer with its id and times spliced in.
        """
        text = prelude.text
        started_ns = time.time_ns()
        t1 = time.perf_counter()
        key = cache_key_of_raw(text, model, prelude.params_raw, controls.namespace)
        answer = await self.calls.cache_get_key(key, controls.namespace, controls)
        if answer is None:  # no lookup message is built unless it misses and the workflow needs one
            return None, step_lookup(self._user_messages(query, text), model, prelude.params, controls)[0]
        template_key = (prelude.task_head, model, answer, holder_name(self.calls, answer.node_id))
        template = self.hit_templates.get(template_key)
        if template is None:
            template = HitTemplate.of(self._hit_task(prelude, model, answer))
            self.hit_templates.put(template_key, template)
        duration_ms = (time.perf_counter() - t1) * 1000
        return self.hit_templates.written(template, task_id, created_ns, (time.perf_counter() - t0) * 1000,
                                          started_ns, duration_ms), None

    def _hit_task(self, prelude: Prelude, model: str, answer: CachedAnswer) -> planner_pb2.Task:
        """The finished task of an exact hit of ``answer``, its id and times unset (``HitTemplate.of``)."""
        task = planner_pb2.Task()
        task.MergeFromString(prelude.task_head + hit_step_head(model))
        step = task.steps[0]
        text = fill_from_answer(self.calls, step, answer)
        step.output = text
        task.status = planner_pb2.TASK_STATUS_SUCCEEDED
        task.answer = text.strip()
        return task

    async def _answer_from_cache(self, query: planner_pb2.Query, prelude: Prelude, controls: CacheControls,
                                 task: planner_pb2.Task, model: str) -> cache_pb2.CacheLookup | None:
        """A hit's answer written into ``task`` (SUCCEEDED, its one step replayed) with no plan or workflow.

        Only for a query whose plan is sure to be the single plain generation ``_plan`` would make
        (``prelude.hit_path``: no rule, nothing that looks like a tool, the cache not refused,
        sampling deterministic or ``cache_nondeterministic``) with ``model`` known, on a node with
        the cache role; ``task`` has that step (``hit_step_head``). A query with history, or one
        asking for a semantic match, is looked up with the message the step would send
        (``step_lookup``, ``MeshCalls.cache_get``); a lone exact one goes by ``_hit_written``.
        Returns the lookup when it missed (the step is removed), so the workflow does not ask
        again; ``None`` when it answered (``task.status`` says so).
        """
        step = task.steps[0]
        stamp_now(step.started_at)
        t0 = time.perf_counter()
        lookup, step_controls = step_lookup(self._user_messages(query, prelude.text), model, prelude.params, controls)
        hit = await self.calls.cache_get(lookup, step_controls)
        if hit is None:
            del task.steps[:]
            return lookup
        text = fill_from_hit(self.calls, step, hit)
        step.duration_ms = (time.perf_counter() - t0) * 1000
        step.output = text
        task.status = planner_pb2.TASK_STATUS_SUCCEEDED
        task.answer = text.strip()
        return None

    async def stream(self, query: planner_pb2.Query) -> AsyncGenerator[planner_pb2.AskStreamResponse, None]:
        """``ask`` as a stream: each event as it happens, then ``final`` with the task.

        Raises ``QueryError`` for an unusable query, and ``TaskFailed`` after ``final`` when
        the task failed. Closing the generator early (the caller went away) cancels the work,
        so a generation nobody reads stops. ``Planner.AskStream`` and the OpenAI API both
        consume this one loop.
        """
        queue: asyncio.Queue[planner_pb2.AskStreamResponse | None] = asyncio.Queue()

        async def run() -> tuple[planner_pb2.Task, grpc.StatusCode | None]:
            try:
                return await self.ask(query, queue.put)
            finally:
                queue.put_nowait(None)

        job = asyncio.create_task(run(), name="planner-stream")
        try:
            while (event := await queue.get()) is not None:
                yield event
            task, status = await job
            yield planner_pb2.AskStreamResponse(task_id=task.task_id, final=task)
            if status is not None:
                raise TaskFailed(task, status)
        finally:
            if not job.done():
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await job

    async def _plan(self, query: planner_pb2.Query, controls: CacheControls, workflow: WorkflowManager,
                    hints: RouteHints | None = None) -> list[StepSpec]:
        """The steps for ``query``; ``hints``: the rules' verdict on its text when already known."""
        text = query.text.strip()
        model = query.model or self.calls.default_model()
        params = effective_params(query)
        use_cache = not query.no_cache
        store_cache = not query.no_store

        def generation(step_id: str, reason: str, build: MessagesFrom, depends: list[str] | None = None) -> StepSpec:
            if not model:
                raise MeshCallError(grpc.StatusCode.UNAVAILABLE,
                                    "no llm node in the mesh: start a node with the llm role")
            return StepSpec(step=_step(step_id, planner_pb2.STEP_KIND_LLM, model, reason, depends),
                            messages=build, params=params, use_cache=use_cache,
                            store_cache=store_cache, controls=controls)

        def tool_then_maybe_phrase(tool: str, arguments: dict[str, Any], reason: str, phrase: bool) -> list[StepSpec]:
            tool_spec = StepSpec(step=_step("s1", planner_pb2.STEP_KIND_TOOL, tool, reason), tool_arguments=arguments)
            if phrase and model and not self.calls.is_live(model):
                tool_spec.step.reason += f"; model {model} is offline: the {tool} result is the answer"
                return [tool_spec]
            if not phrase or not model:
                return [tool_spec]

            def phrase_messages(results: dict[str, StepResult]) -> list[common_pb2.ChatMessage]:
                given = f"{text}\n\nResult of {tool}: {results['s1'].text}"
                return [common_pb2.ChatMessage(role="system", content=PHRASE_SYSTEM),
                        *query.history,
                        common_pb2.ChatMessage(role="user", content=given)]

            return [tool_spec, generation("s2", f"the query asks for more than the {tool} result: "
                                                "the model phrases the answer from it", phrase_messages, ["s1"])]

        if continues_tool_call(query):
            return [generation("s1", "the conversation ends with a tool result: the model continues it",
                               lambda _r: self._user_messages(query, text))]
        if query.no_tools:
            hints = RouteHints(rule=None, toolish=False)
        elif hints is None:
            hints = await hints_off_loop(text)
        if not query.no_tools:
            rule = hints.rule
            if rule is not None:
                return tool_then_maybe_phrase(rule.tool, rule.arguments, rule.reason, rule.phrase_with_model)
        plain_reason = f"{hints.note}: plain generation" if hints.note else PLAIN_REASON
        if not query.no_tools and model and hints.toolish and self.calls.is_live(model):
            catalogue = await self.calls.tool_catalogue()
            if catalogue:
                proposal_params = common_pb2.GenerationParams(temperature=0.0, max_tokens=MAX_PROPOSAL_TOKENS)
                propose = StepSpec(
                    step=_step("p1", planner_pb2.STEP_KIND_LLM, model,
                               "the query may need a tool: the model was shown the tools' JSON Schemas"),
                    messages=lambda _r: [common_pb2.ChatMessage(**m) for m in proposal_messages(text, catalogue)],
                    params=proposal_params, use_cache=use_cache, store_cache=store_cache,
                    controls=dataclasses.replace(controls, semantic=False))
                await workflow.run([propose])  # records the step in the task's trace
                outcome = workflow.results["p1"]
                if not outcome.ok:
                    raise MeshCallError(workflow.first_error, propose.step.error)
                proposal = parse_proposal(outcome.text, catalogue)
                if proposal.tool is not None:
                    return tool_then_maybe_phrase(proposal.tool, proposal.arguments, proposal.reason, True)
                plain_reason = f"{proposal.reason}: falling back to plain generation"
        return [generation("s1", plain_reason, lambda _r: self._user_messages(query, text))]
