"""One guard for every call replication makes to a peer: a closed channel is an error, not a cancel.

When a peer times out, membership closes its channel, and grpc.aio ends the calls still
in flight on it by raising ``asyncio.CancelledError`` in their callers. Caught nowhere
(it is not an ``Exception``), that error silently ends whatever task made the call: a
replication worker, the maintenance loop, anti-entropy. ``guarded`` turns it into an
``AioRpcError`` with ``CANCELLED``, which callers already handle like any failed call,
unless the calling task itself is being cancelled (then it propagates, as it must).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import grpc

T = TypeVar("T")


def being_cancelled() -> bool:
    """Whether the current task was asked to stop (as opposed to a call of it being cut)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def guarded(call: Awaitable[T]) -> T:
    try:
        return await call
    except asyncio.CancelledError:
        if being_cancelled():
            raise
        raise grpc.aio.AioRpcError(grpc.StatusCode.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                   details="the call's channel was closed (its peer left)") from None
