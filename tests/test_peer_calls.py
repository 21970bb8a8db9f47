"""The peer-call policy on its own (mesh/peer_calls.py): ranking, retryable codes, failover, streams.

Fake candidates and fake calls, no processes: each test names one rule of the policy that
the planner, the OpenAI gateway, the tool router and the bridge all rely on. The last two
run it over real gRPC on loopback (in-process servers), so real call objects, status codes
and cancellation are what the policy sees.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from llmlab_grpc.mesh.peer_calls import (
    RETRYABLE_CODES,
    RETRYABLE_NAMES,
    SUSPECT_FOR_S,
    Candidate,
    Failover,
    PeerCallError,
    PeerCalls,
    Retry,
    peer_candidate,
)
from llmlab_grpc.mesh.peers import PeerTable
from llmlab_grpc.proto.llmlab.v1 import common_pb2, inference_pb2, inference_pb2_grpc


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def nodes(*names: str, **busy: int) -> list[Candidate]:
    return [Candidate(n, n, f"127.0.0.1:{i + 1}", busy=busy.get(n, 0)) for i, n in enumerate(names)]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_retryable_codes_are_the_three_that_say_this_node_cannot_do_it_now() -> None:
    assert sorted(c.name for c in RETRYABLE_CODES) == ["DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "UNAVAILABLE"]
    assert sorted(RETRYABLE_NAMES) == ["DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "UNAVAILABLE"]


# -- ranking ---------------------------------------------------------------------------------


def test_this_node_first_then_least_busy_then_by_name() -> None:
    here = Candidate("me", "me", "127.0.0.1:9", local=True, busy=5)
    ranked = PeerCalls().rank([*nodes("c", "b", "a", a=2), here])
    assert [c.node_id for c in ranked] == ["me", "b", "c", "a"]


def test_our_own_calls_in_flight_count_before_any_heartbeat_reports_them() -> None:
    calls = PeerCalls()
    calls.started("a")
    calls.started("a")
    assert [c.node_id for c in calls.rank(nodes("a", "b", b=1))] == ["b", "a"]
    calls.finished("a")
    calls.finished("a")
    assert calls.in_flight == {} and [c.node_id for c in calls.rank(nodes("a", "b", b=1))] == ["a", "b"]


def test_a_node_that_failed_us_goes_last_until_the_suspicion_expires() -> None:
    clock = Clock()
    calls = PeerCalls(clock=clock)
    here = Candidate("me", "me", local=True)
    calls.suspect("me")
    assert [c.node_id for c in calls.rank([here, *nodes("a")])] == ["a", "me"]
    clock.now += SUSPECT_FOR_S
    assert [c.node_id for c in calls.rank([here, *nodes("a")])] == ["me", "a"]


def test_a_stale_peer_goes_last_and_a_one_way_peer_is_never_a_candidate() -> None:
    table = PeerTable("me", interval_s=1.0)
    for name in ("a", "b", "c"):
        table.upsert(common_pb2.NodeInfo(node_id=name, name=name, address=f"127.0.0.1:{ord(name)}", roles=["llm"]),
                     "static")
    table.mark_one_way("c", "its heartbeats reach us, our calls do not reach it")
    a = table.get("a")
    assert a is not None
    a.last_seen_mono -= 10  # no call of ours has reached it for ten heartbeat intervals
    found = [peer_candidate(r, interval_s=1.0) for r in table.with_role("llm")]
    assert [c.node_id for c in found] == ["a", "b"] and found[0].stale and not found[1].stale
    assert [c.node_id for c in PeerCalls().rank(found)] == ["b", "a"]


def test_spread_ranks_llm_nodes_by_expected_wait_and_suspects_last() -> None:
    slow = Candidate("slow", "slow", speed=10.0)
    fast = Candidate("fast", "fast", speed=40.0)
    busy_fast = Candidate("busy-fast", "busy-fast", busy=6, speed=40.0)
    calls = PeerCalls()
    assert [c.node_id for c in calls.rank([slow, fast, busy_fast], spread=True)] == ["fast", "slow", "busy-fast"]
    calls.suspect("fast")
    assert [c.node_id for c in calls.rank([slow, fast, busy_fast], spread=True)] == ["slow", "busy-fast", "fast"]


# -- unary calls -----------------------------------------------------------------------------


def attempts(script: dict[str, Any]) -> tuple[list[str], Callable[[Candidate], Any]]:
    """An attempt that raises or returns what ``script`` says for each node, and the order tried."""
    tried: list[str] = []

    async def attempt(cand: Candidate) -> Any:
        tried.append(cand.node_id)
        outcome = script[cand.node_id]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return tried, attempt


@pytest.mark.parametrize("code", sorted(RETRYABLE_CODES, key=lambda c: c.name))
async def test_a_retryable_code_moves_to_the_next_node_and_is_recorded(code: grpc.StatusCode) -> None:
    calls = PeerCalls("tools node")
    tried, attempt = attempts({"a": rpc_error(code, "gone"), "b": "answer"})
    answer, who, failed = await calls.call(nodes("a", "b"), attempt)
    assert (answer, who.node_id, tried) == ("answer", "b", ["a", "b"])
    assert [(f.node_id, f.code) for f in failed] == [("a", code)]
    assert failed[0].describe() == f"tools node a: {code.name}: gone"
    assert calls.in_flight == {} and [c.node_id for c in calls.rank(nodes("a", "b"))] == ["b", "a"]


async def test_a_message_refused_for_its_size_is_not_retried_every_node_has_the_same_limit() -> None:
    too_big = rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (9000000 vs. 4456448)")
    tried, attempt = attempts({"a": too_big, "b": "answer"})
    with pytest.raises(PeerCallError) as caught:
        await PeerCalls().call(nodes("a", "b"), attempt)
    assert tried == ["a"] and caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and not caught.value.exhausted


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                  grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INTERNAL])
async def test_any_other_code_is_the_answer_and_nothing_else_is_tried(code: grpc.StatusCode) -> None:
    tried, attempt = attempts({"a": rpc_error(code, "bad request"), "b": "answer"})
    with pytest.raises(PeerCallError) as caught:
        await PeerCalls().call(nodes("a", "b"), attempt)
    assert tried == ["a"]
    err = caught.value
    assert (err.code, err.details, err.exhausted, err.candidate and err.candidate.node_id) == (
        code, "bad request", False, "a")


async def test_every_node_failing_raises_the_last_code_with_every_failover() -> None:
    failed: list[Failover] = []
    _, attempt = attempts({"a": rpc_error(grpc.StatusCode.UNAVAILABLE, "down"),
                           "b": rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")})
    with pytest.raises(PeerCallError) as caught:
        await PeerCalls("cache node").call(nodes("a", "b"), attempt, failed_over=failed)
    err = caught.value
    assert err.exhausted and err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [f.node_id for f in err.failed_over] == ["a", "b"] and failed == err.failed_over
    assert err.tried() == "cache node a: UNAVAILABLE: down; cache node b: RESOURCE_EXHAUSTED: queue full"


async def test_no_candidate_at_all_is_unavailable() -> None:
    with pytest.raises(PeerCallError) as caught:
        await PeerCalls("planner node").call([], attempts({})[1])
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE and caught.value.exhausted
    assert "no planner node is alive" in caught.value.details


async def test_retry_moves_on_and_record_false_leaves_no_trace() -> None:
    calls = PeerCalls()
    tried, attempt = attempts({"a": Retry("tool removed", record=False), "b": Retry("phone gone"), "c": "ok"})
    answer, who, failed = await calls.call(nodes("a", "b", "c"), attempt)
    assert (answer, who.node_id, tried) == ("ok", "c", ["a", "b", "c"])
    assert [(f.node_id, f.why) for f in failed] == [("b", "phone gone")]
    assert set(calls.suspects) == {"b"}


async def test_other_exceptions_pass_through_unchanged() -> None:
    tried, attempt = attempts({"a": ValueError("the caller's own error"), "b": "ok"})
    with pytest.raises(ValueError, match="own error"):
        await PeerCalls().call(nodes("a", "b"), attempt)
    assert tried == ["a"]


async def test_nothing_is_tried_once_the_callers_deadline_passed() -> None:
    loop = asyncio.get_running_loop()
    tried, attempt = attempts({"a": rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED), "b": "ok"})
    with pytest.raises(PeerCallError) as caught:
        await PeerCalls().call(nodes("a", "b"), attempt, until=loop.time() - 0.001)
    assert tried == [] and caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


# -- streams ---------------------------------------------------------------------------------

HANG = object()


class FakeStream:
    """A unary-stream call: ``read()`` returns the scripted messages, raises errors, or hangs."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.cancelled = False

    async def read(self) -> Any:
        if not self.script:
            return grpc.aio.EOF
        item = self.script.pop(0)
        if item is HANG:
            await asyncio.Event().wait()
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> bool:
        self.cancelled = True
        return True


async def collect(calls: PeerCalls, streams: dict[str, FakeStream], **kwargs: Any) -> list[tuple[str, Any]]:
    got: list[tuple[str, Any]] = []
    async for cand, message in calls.stream(nodes(*streams), lambda c: streams[c.node_id], **kwargs):
        got.append((cand.node_id, message))
    return got


async def test_a_stream_fails_over_before_its_first_message() -> None:
    streams = {"a": FakeStream(rpc_error(grpc.StatusCode.UNAVAILABLE, "down")), "b": FakeStream("x", "y")}
    failed: list[Failover] = []
    assert await collect(PeerCalls(), streams, failed_over=failed) == [("b", "x"), ("b", "y")]
    assert [f.node_id for f in failed] == ["a"] and streams["a"].cancelled and streams["b"].cancelled


async def test_a_silent_first_message_fails_over_and_says_which_flag_bounds_it() -> None:
    streams = {"a": FakeStream(HANG), "b": FakeStream("x")}
    failed: list[Failover] = []
    got = await collect(PeerCalls("llm node"), streams, silence_s=0.05, first="token",
                        silence_flag="--first-token-timeout", failed_over=failed)
    assert got == [("b", "x")]
    assert failed[0].describe() == "llm node a sent no first token within 0.05 s (--first-token-timeout)"
    assert failed[0].code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_after_the_first_message_a_failure_is_the_callers_never_a_splice() -> None:
    streams = {"a": FakeStream("x", rpc_error(grpc.StatusCode.UNAVAILABLE, "cut")), "b": FakeStream("y")}
    got: list[tuple[str, Any]] = []
    with pytest.raises(PeerCallError) as caught:
        async for cand, message in PeerCalls().stream(nodes("a", "b"), lambda c: streams[c.node_id]):
            got.append((cand.node_id, message))
    assert got == [("a", "x")] and caught.value.mid_stream and caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert not streams["b"].cancelled and streams["b"].script == ["y"]  # never opened


async def test_silence_after_the_first_message_is_a_silent_mid_stream_error() -> None:
    streams = {"a": FakeStream("x", HANG), "b": FakeStream("y")}
    with pytest.raises(PeerCallError) as caught:
        await collect(PeerCalls("llm node"), streams, silence_s=0.05)
    err = caught.value
    assert err.mid_stream and err.silent and err.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "llm node a went silent mid-answer" in err.details


async def test_a_non_retryable_code_before_the_first_message_is_not_failed_over() -> None:
    streams = {"a": FakeStream(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad")), "b": FakeStream("y")}
    with pytest.raises(PeerCallError) as caught:
        await collect(PeerCalls(), streams)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and not caught.value.mid_stream
    assert streams["b"].script == ["y"]


async def test_a_consumer_that_stops_early_cancels_the_call_and_frees_the_slot() -> None:
    calls = PeerCalls()
    stream = FakeStream("x", "y", "z")
    gen = calls.stream(nodes("a"), lambda c: stream)
    async with contextlib.aclosing(gen):
        async for _ in gen:
            assert calls.in_flight == {"a": 1}
            break
    assert stream.cancelled and calls.in_flight == {}


# -- over real gRPC on loopback ----------------------------------------------------------------


class FakeInference(inference_pb2_grpc.InferenceServicer):
    """An llm node's Inference service that aborts with ``code``, or streams pieces until cancelled."""

    def __init__(self, code: grpc.StatusCode | None = None) -> None:
        self.code = code
        self.cancelled = asyncio.Event()

    async def Generate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if self.code is not None:
            await context.abort(self.code, f"fake {self.code.name}")
        try:
            for i in range(1000):
                yield inference_pb2.GenerateResponse(text=f"piece {i} ")
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def ListModels(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if self.code is not None:
            await context.abort(self.code, f"fake {self.code.name}")
        return inference_pb2.ListModelsResponse(models=[inference_pb2.ModelInfo(name="m")])


@contextlib.asynccontextmanager
async def serving(*servicers: FakeInference) -> AsyncIterator[list[str]]:
    servers, addresses = [], []
    for servicer in servicers:
        server = grpc.aio.server()
        inference_pb2_grpc.add_InferenceServicer_to_server(servicer, server)
        addresses.append(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        await server.start()
        servers.append(server)
    try:
        yield addresses
    finally:
        for server in servers:
            await server.stop(None)


async def test_real_streams_fail_over_before_the_first_piece_and_an_early_stop_cancels_the_node() -> None:
    down, working = FakeInference(grpc.StatusCode.UNAVAILABLE), FakeInference()
    async with serving(down, working) as addresses:
        channels = [grpc.aio.insecure_channel(a) for a in addresses]
        cands = [Candidate(f"n{i}", f"n{i}", a) for i, a in enumerate(addresses)]
        failed: list[Failover] = []
        calls = PeerCalls("llm node")
        stream = calls.stream(cands, lambda c: inference_pb2_grpc.InferenceStub(channels[cands.index(c)]).Generate(
            inference_pb2.GenerateRequest(model="m"), timeout=10), failed_over=failed)
        async with contextlib.aclosing(stream):
            async for cand, piece in stream:
                assert (cand.node_id, piece.text) == ("n1", "piece 0 ")
                break
        await asyncio.wait_for(working.cancelled.wait(), 5)  # the node's work stopped with the reader
        assert [(f.node_id, f.code) for f in failed] == [("n0", grpc.StatusCode.UNAVAILABLE)]
        for channel in channels:
            await channel.close()


async def test_a_real_unreachable_node_is_failed_over_and_a_refusal_is_the_answer() -> None:
    async with serving(FakeInference(grpc.StatusCode.INVALID_ARGUMENT), FakeInference()) as (refusing, working):
        gone = "127.0.0.1:1"  # nothing listens there: connection refused, UNAVAILABLE
        channels = {a: grpc.aio.insecure_channel(a) for a in (gone, refusing, working)}

        def list_models(c: Candidate) -> Any:
            return inference_pb2_grpc.InferenceStub(channels[c.address]).ListModels(
                inference_pb2.ListModelsRequest(), timeout=5)

        reply, who, failed = await PeerCalls().call(
            [Candidate("gone", "gone", gone), Candidate("ok", "ok", working, busy=1)], list_models)
        assert who.node_id == "ok" and [m.name for m in reply.models] == ["m"]
        assert [(f.node_id, f.code) for f in failed] == [("gone", grpc.StatusCode.UNAVAILABLE)]
        with pytest.raises(PeerCallError) as caught:
            await PeerCalls().call([Candidate("no", "no", refusing), Candidate("ok", "ok", working, busy=1)],
                                   list_models)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and caught.value.candidate.node_id == "no"
        for channel in channels.values():
            await channel.close()
