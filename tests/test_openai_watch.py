"""The wait for a non-streamed /v1 answer: a finished answer costs no watch; a waiting one is stopped by the
client leaving (``ClientGone``) or the deadline (504), and the request's task is left as it was."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from llmlab_grpc.openai_api.errors import ApiError
from llmlab_grpc.openai_api.watch import ClientGone, until_answered


class FakeRequest:
    """The two things the watch reads of a Starlette request: ``receive`` and the path."""

    url = SimpleNamespace(path="/v1/chat/completions")

    def __init__(self, leave_after_s: float | None = None) -> None:
        self.leave_after_s = leave_after_s
        self.receives = 0

    async def receive(self) -> dict[str, Any]:
        self.receives += 1
        if self.leave_after_s is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.leave_after_s or 0)
        return {"type": "http.disconnect"}


async def test_an_answer_that_never_waits_sets_up_nothing() -> None:
    async def hit() -> str:
        return "task"

    request = FakeRequest(leave_after_s=0)
    assert await until_answered(request, hit(), 5.0) == "task"  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    assert request.receives == 0  # the watch was never armed


async def test_a_client_that_leaves_stops_the_answer() -> None:
    stopped = asyncio.Event()

    async def generation() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return "never"

    with pytest.raises(ClientGone):
        await until_answered(FakeRequest(leave_after_s=0.05), generation(), 5.0)  # type: ignore[arg-type]
    assert stopped.is_set()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the request's task is not left cancelled
    await asyncio.sleep(0)  # and goes on waiting normally


async def test_the_deadline_is_a_504() -> None:
    async def generation() -> str:
        await asyncio.sleep(30)
        return "never"

    with pytest.raises(ApiError) as err:
        await until_answered(FakeRequest(), generation(), 0.05)  # type: ignore[arg-type]
    assert err.value.status == 504 and err.value.code == "timeout"


async def test_an_answer_that_waits_and_finishes_is_the_answer_and_errors_pass_through() -> None:
    async def generation() -> str:
        await asyncio.sleep(0.01)
        return "task"

    async def failing() -> str:
        await asyncio.sleep(0.01)
        raise ApiError(503, "no llm node")

    request = FakeRequest()
    assert await until_answered(request, generation(), 5.0) == "task"  # type: ignore[arg-type]
    assert request.receives == 1  # armed, then disarmed
    with pytest.raises(ApiError) as err:
        await until_answered(FakeRequest(), failing(), 5.0)  # type: ignore[arg-type]
    assert err.value.status == 503


async def test_a_cancellation_from_outside_is_not_taken_for_ours() -> None:
    async def generation() -> str:
        await asyncio.sleep(30)
        return "never"

    outer = asyncio.ensure_future(until_answered(FakeRequest(), generation(), 5.0))  # type: ignore[arg-type]
    await asyncio.sleep(0.02)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
