"""Run a callback on a given event loop, from that loop's thread or from any other.

The cache calls its listeners synchronously on whatever thread put or deleted the
entry: the node's event loop most of the time, but also ``asyncio.to_thread`` workers
and the threads of a Ray-backed store. Listeners whose state belongs to the node's
loop (the bridge's cache sync, the replicator's queue) must not touch it from those
threads; on the loop itself they run at once, so the effect is in place before the
caller's next statement rather than one loop turn later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


def call_in_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """``fn(*args)`` now when running on ``loop``'s thread, else scheduled there with ``call_soon_threadsafe``.

    Raises ``RuntimeError`` like ``call_soon_threadsafe`` when ``loop`` is closed; callers that
    may outlive their loop check ``loop.is_closed()`` first.
    """
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn(*args)
    else:
        loop.call_soon_threadsafe(fn, *args)
