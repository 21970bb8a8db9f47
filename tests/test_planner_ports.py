"""The Planner given fakes of its ports (llmlab_grpc/ports.py): no node, no process, no Ray.

What the ports make possible: the planner's cache hit path and its load counter, checked
directly. The peer table is real (empty: no peer), the cache is a fake ``PlannerCache``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import grpc
import pytest

from llmlab_grpc.cache.entry import CachedAnswer
from llmlab_grpc.cache.manager import CacheManager
from llmlab_grpc.cache.service import CacheService
from llmlab_grpc.config import NodeSettings
from llmlab_grpc.mesh.channels import ChannelPool
from llmlab_grpc.mesh.known_models import KnownModels
from llmlab_grpc.mesh.peers import PeerTable
from llmlab_grpc.planner.mesh_calls import MeshCalls
from llmlab_grpc.planner.planner import Planner, QueryError, effective_params
from llmlab_grpc.planner.service import PlannerService
from llmlab_grpc.planner.tasks import query_digest
from llmlab_grpc.ports import PLANNER_TASKS, LoadMeter, LocalNode, PlannerCache
from llmlab_grpc.proto.llmlab.v1 import cache_pb2, common_pb2, planner_pb2

MODEL = "smollm2-135m"


class AnsweringCache:
    """A ``PlannerCache`` that has an answer for every question, and notes the node's load when asked."""

    def __init__(self, meter: LoadMeter) -> None:
        self.meter = meter
        self.in_flight_seen: list[int] = []

    async def lookup(self, key: str, read_through: bool = False, max_age_s: float | None = None,
                     namespace: str = "") -> cache_pb2.GetResponse:
        self.in_flight_seen.append(self.meter.proto().in_flight)
        entry = common_pb2.CacheEntry(key=key, response="Paris.", primary_node_id="cache-node", namespace=namespace)
        return cache_pb2.GetResponse(found=True, entry=entry, source_node_id="cache-node")

    async def lookup_answer(self, key: str, read_through: bool = False, max_age_s: float | None = None,
                            namespace: str = "") -> CachedAnswer | None:
        reply = await self.lookup(key, read_through, max_age_s, namespace)
        return CachedAnswer.of(reply.entry, reply.source_node_id) if reply.found else None

    async def semantic_lookup(self, lookup: cache_pb2.CacheLookup, min_similarity: float = 0.0,
                              max_age_s: float | None = None, candidates: int = 0) -> cache_pb2.GetResponse:
        return cache_pb2.GetResponse(found=False)

    async def store(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a hit is not stored again")

    async def copies_of(self, entry: Any, timeout_s: float = 3.0) -> tuple[int, int, int]:
        raise AssertionError("a hit is not stored again")


def planner_with(cache: PlannerCache | None, meter: LoadMeter) -> Planner:
    me = LocalNode("p1", "planner-1", ["planner"], "mesh", 0, address="127.0.0.1:9")
    calls = MeshCalls(me, PeerTable("p1"), ChannelPool("unit-test-secret"), meter, KnownModels(None, "mesh"),
                      first_token_timeout_s=20.0, heartbeat_interval_s=1.0, local_cache=cache)
    return Planner(calls, NodeSettings(name="planner-1", mdns=False), meter.claim(PLANNER_TASKS))


async def test_a_hit_in_this_nodes_cache_is_the_answer_with_no_llm_node_and_no_call() -> None:
    meter = LoadMeter()
    cache = AnsweringCache(meter)
    planner = planner_with(cache, meter)
    task, status = await planner.ask(planner_pb2.Query(text="What is the capital of France?", model=MODEL))
    assert status is None and task.status == planner_pb2.TASK_STATUS_SUCCEEDED, task.error
    assert task.answer == "Paris."
    step = task.steps[-1]
    assert step.cache == planner_pb2.CACHE_OUTCOME_HIT and step.node_id == "cache-node"
    # The ask counted as one planner task while it ran (in_flight), and no longer after.
    assert cache.in_flight_seen == [1] and meter.proto().in_flight == 0


async def test_no_cache_and_no_llm_node_fails_unavailable_and_leaves_the_count() -> None:
    meter = LoadMeter()
    planner = planner_with(None, meter)
    task, status = await planner.ask(planner_pb2.Query(text="What is the capital of France?", model=MODEL))
    assert task.status == planner_pb2.TASK_STATUS_FAILED
    assert status == grpc.StatusCode.UNAVAILABLE and MODEL in task.error
    assert task.steps[-1].cache == planner_pb2.CACHE_OUTCOME_NONE
    assert meter.proto().in_flight == 0


class CountingCache(AnsweringCache):
    """An ``AnsweringCache`` that counts lookups and answers only when ``answers`` is set."""

    def __init__(self, meter: LoadMeter, answers: bool) -> None:
        super().__init__(meter)
        self.answers = answers
        self.lookups = 0

    async def lookup(self, key: str, read_through: bool = False, max_age_s: float | None = None,
                     namespace: str = "") -> cache_pb2.GetResponse:
        self.lookups += 1
        if self.answers:
            return await super().lookup(key, read_through, max_age_s, namespace)
        return cache_pb2.GetResponse(found=False)


async def test_a_hit_answered_without_a_workflow_is_kept_in_the_task_store() -> None:
    meter = LoadMeter()
    cache = CountingCache(meter, answers=True)
    planner = planner_with(cache, meter)
    task, status = await planner.ask(planner_pb2.Query(text="What is the capital of France?", model=MODEL))
    assert status is None and cache.lookups == 1
    assert planner.store.get(task.task_id) is task and task.status == planner_pb2.TASK_STATUS_SUCCEEDED
    assert [s.step_id for s in task.steps] == ["s1"] and task.steps[0].output == "Paris."


async def test_a_miss_is_looked_up_once_then_generated() -> None:
    meter = LoadMeter()
    cache = CountingCache(meter, answers=False)
    planner = planner_with(cache, meter)
    task, status = await planner.ask(planner_pb2.Query(text="What is the capital of France?", model=MODEL))
    # No llm node: the generation after the miss fails, and the cache was asked once, not twice.
    assert status == grpc.StatusCode.UNAVAILABLE and cache.lookups == 1
    assert task.steps[-1].cache == planner_pb2.CACHE_OUTCOME_MISS


async def test_a_query_a_rule_routes_to_a_tool_is_never_answered_from_the_cache() -> None:
    meter = LoadMeter()
    cache = CountingCache(meter, answers=True)
    planner = planner_with(cache, meter)
    task, _ = await planner.ask(planner_pb2.Query(text="What is 25 * 67?", model=MODEL))
    assert cache.lookups == 0 and task.steps[0].kind == planner_pb2.STEP_KIND_TOOL


class Aborted(Exception):
    """What ``context.abort`` raises in grpc.aio, carrying the status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


class AbortingContext:
    """The one method of a ``ServicerContext`` the planner's service calls: ``abort``."""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


async def real_cache_with(prompt: str, answer: str) -> tuple[CacheService, str]:
    """A real in-memory cache holding ``answer`` for the planner's plain generation of ``prompt``; its key."""
    service = CacheService(CacheManager(node_id="cache-1"), "cache-1")
    params = effective_params(planner_pb2.Query(text=prompt))
    lookup = cache_pb2.CacheLookup(prompt=prompt, model=MODEL, params=params)
    entry = await service.store(lookup, answer, usage=common_pb2.CachedUsage(
        prompt_tokens=7, completion_tokens=3, finish_reason="length"))
    return service, entry.key


class WireAsk(NamedTuple):
    """A planner over a real cache holding one answer, and its question as ``Ask``'s request bytes."""

    cache: CacheService
    key: str
    planner: Planner
    service: PlannerService
    query: planner_pb2.Query
    raw: bytes


async def wire_ask(prompt: str, answer: str) -> WireAsk:
    cache, key = await real_cache_with(prompt, answer)
    planner = planner_with(cache, LoadMeter())
    query = planner_pb2.Query(text=prompt, model=MODEL)
    return WireAsk(cache, key, planner, PlannerService(planner), query,
                   planner_pb2.AskRequest(query=query).SerializeToString())


async def test_a_hit_in_a_real_cache_writes_the_trace_a_get_reply_would() -> None:
    cache, key = await real_cache_with("Name a primary colour.", "Red.")
    meter = LoadMeter()
    planner = planner_with(cache, meter)
    task, status = await planner.ask(planner_pb2.Query(text="Name a primary colour.", model=MODEL))
    assert status is None and task.answer == "Red."
    step = task.steps[0]
    assert step.cache == planner_pb2.CACHE_OUTCOME_HIT and step.cache_match.key == key
    assert step.cache_match.matched_prompt == "Name a primary colour." and step.cache_match.similarity == 1.0
    assert step.node_id == "cache-1" and step.output == "Red."
    assert (step.usage.prompt_tokens, step.usage.completion_tokens, step.usage.finish_reason) == (7, 3, "length")
    assert cache.manager.get_stats()["hits"] == 1  # counted once, as one lookup


async def test_ask_over_bytes_answers_what_ask_would_and_keeps_that_task() -> None:
    _, _, planner, service, _, raw = await wire_ask("Name a primary colour.", "Red.")
    reply = await service.ask_wire(raw, AbortingContext())  # type: ignore[arg-type]
    task = planner_pb2.AskResponse.FromString(reply).task
    assert task.answer == "Red." and task.steps[0].cache == planner_pb2.CACHE_OUTCOME_HIT
    stored = planner.store.get(task.task_id)
    assert stored is not None and reply == planner_pb2.AskResponse(task=stored).SerializeToString()
    assert planner.store.bytes == stored.ByteSize()  # the store counted the bytes the reply carried
    with pytest.raises(Aborted) as garbage:
        await service.ask_wire(b"\xff\xff\xff", AbortingContext())  # type: ignore[arg-type]
    assert garbage.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(Aborted) as empty:
        await service.ask_wire(planner_pb2.AskRequest().SerializeToString(), AbortingContext())  # type: ignore[arg-type]
    assert empty.value.code == grpc.StatusCode.INVALID_ARGUMENT and "empty" in str(empty.value)


async def test_a_query_asked_again_is_a_new_task_and_an_unusable_one_is_never_remembered() -> None:
    cache, _ = await real_cache_with("Name a primary colour.", "Red.")
    planner = planner_with(cache, LoadMeter())
    query = planner_pb2.Query(text="Name a primary colour.", model=MODEL)
    first, _ = await planner.ask(query)
    second, _ = await planner.ask(query)
    assert first.task_id != second.task_id and first.created_at.ToNanoseconds() <= second.created_at.ToNanoseconds()
    assert planner.store.get(first.task_id) is first and planner.store.get(second.task_id) is second
    assert first.query_sha256 == second.query_sha256 == query_digest(query) and len(planner.memo) == 1
    for _ in range(2):  # refused each time, with the same reason, and not remembered
        with pytest.raises(QueryError, match="temperature"):
            await planner.ask(planner_pb2.Query(text="hi", params={"temperature": 5.0}))
    assert len(planner.memo) == 1 and cache.manager.get_stats()["hits"] == 2
