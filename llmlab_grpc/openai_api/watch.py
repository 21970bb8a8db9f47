"""Waiting for a non-streamed answer while the deadline runs and the client may leave.

A streamed answer notices a departed client when a write fails; a non-streamed one writes
nothing until the end, so without a watch a generation nobody will read ran to its last
token. ``until_answered(request, answer, timeout_s)`` awaits ``answer`` in the request's
own task and stops it with ``ClientGone`` when the client disconnects, or with the 504 of
``errors.deadline`` when ``timeout_s`` passes.

Why not a task for the answer and ``asyncio.timeout`` around it: a cache hit is answered
without ever waiting, and for it the task, the extra loop turn to see it done and the
timeout's timer cost as much as the rest of the API's work on a hit. So the watch is armed
by a callback one loop turn later, which runs only if the answer did wait (a hit cancels
it before the loop gets to it). Armed, it sets the deadline's timer and starts the
disconnect watch (the body has been read, so the next ASGI message can only be
``http.disconnect``); either cancels the request's task, exactly as ``asyncio.timeout``
does, and the cancellation is turned into its reason where the answer is awaited.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from starlette.requests import Request

from llmlab_grpc.openai_api.errors import deadline

log = logging.getLogger(__name__)


class ClientGone(Exception):
    """The client disconnected before its non-streamed answer was ready; nobody is left to answer."""


class _Watch:
    """The deadline and the disconnect watch of one request, armed only once its answer waits."""

    def __init__(self, request: Request, timeout_s: float) -> None:
        task = asyncio.current_task()
        assert task is not None, "a request is always served in a task"
        self.task = task
        self.loop = asyncio.get_running_loop()
        self.request = request
        self.timeout_s = timeout_s
        self.until = self.loop.time() + timeout_s
        self.cancelling = task.cancelling()  # cancellations from outside before us: never ours to undo
        self.reason: Exception | None = None
        self.handles = [self.loop.call_soon(self._arm)]
        self.gone: asyncio.Task[None] | None = None

    def _arm(self) -> None:
        self.handles.append(self.loop.call_at(self.until, self._stop, deadline(self.timeout_s)))
        self.gone = self.loop.create_task(self._watch_gone())

    async def _watch_gone(self) -> None:
        while (await self.request.receive())["type"] != "http.disconnect":
            pass
        log.info("client went away: cancelling the generation of %s", self.request.url.path)
        self._stop(ClientGone())

    def _stop(self, reason: Exception) -> None:
        if self.reason is None and not self.task.done():
            self.reason = reason
            self.task.cancel()

    def close(self) -> Exception | None:
        """Disarm; the reason to answer with when this watch cancelled the task (and nobody else did)."""
        for handle in self.handles:
            handle.cancel()
        if self.gone is not None:
            self.gone.cancel()
        if self.reason is not None and self.task.uncancel() <= self.cancelling:
            return self.reason
        return None


async def until_answered(request: Request, answer: Coroutine[Any, Any, Any], timeout_s: float) -> Any:
    """``await answer``, or ``ClientGone`` / a 504 ``ApiError`` when the client leaves / the deadline passes."""
    watch = _Watch(request, timeout_s)
    try:
        result = await answer
    except BaseException:
        reason = watch.close()
        if reason is not None:  # what the answer raised while it was being stopped has nobody to go to
            raise reason from None
        raise
    watch.close()  # stopped but finished anyway (it swallowed the cancellation): the answer stands, as with timeout
    return result
