"""The Ray store: values live in Ray's object store as ``ObjectRef``s owned by the node.

Ownership (Ray's ownership model): a Ray object lives as long as its *owner*
(the worker that created it, by ``ray.put`` or by calling the task that returned it) is
alive and someone holds a reference. So the owner must live exactly as long as the
cache. That is the node process itself: it is the Ray driver, every ``ray.put`` here
runs in it, and the index holding the refs is a Python dict in it. Values made
elsewhere are copied in (``adopt``): an ``ObjectRef`` produced by a task or an actor may
be owned by that worker and would raise ``OwnerDiedError`` once it exits, so the cache
reads it once and puts the value again. tests/test_cache_ray.py kills such an actor
and reads the entry.

Speed (issue 15; figures in docs/cache.md). Measured here, a ``ray.put`` of 1 KB costs
0.3-0.8 ms and a ``ray.get`` about 0.1 ms, both blocking the calling thread, and Ray's
own async API (``await ref``) costs more per read than a blocking get because it hops
threads twice. So the store keeps Ray off the event loop and off the hit path:

* **Writes behind.** ``put`` returns a handle at once; one writer thread does the
  ``ray.put``. Until then the handle holds the value, and reads are served from it.
  The writer's queue is bounded (``WRITE_QUEUE``): when it is full, ``put`` writes
  itself (back-pressure instead of unbounded memory).
* **Hot copies.** The most recently written or read values keep an in-process copy, up
  to ``hot_bytes`` (LRU; ``--cache-hot-bytes``, 0 turns it off). A hit on a hot value
  costs no Ray call. A copy is dropped only once its value is in Ray.
* **Cold reads off the loop, batched.** ``aget`` of a value that has no copy hands the
  ref to one reader thread, which reads every ref waiting at that moment with one
  ``ray.get([...])`` and resolves each caller's future on its own loop.

Every in-process byte is bounded: hot copies by ``hot_bytes``, values waiting to be
written by the writer queue and, like every value, by the cache's ``max_bytes`` (the
manager releases a handle when its entry goes). ``stats()`` reports them.

Ray must have been started on the process's main thread (``ensure_ray``): Ray ties
the local cluster's processes to the thread that started them. The driver's ``put``
and ``get`` may then be called from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections import OrderedDict
from typing import Any

from llmlab_grpc.cache.errors import InvalidCacheRequest, StoreUnavailable
from llmlab_grpc.cache.stores.base import ValueStore

log = logging.getLogger(__name__)
GET_TIMEOUT_S = 5.0
"""A local ``ray.get`` takes well under a millisecond; this only bounds a wedged Ray."""
WRITE_QUEUE = 1024
"""Values waiting for the writer thread at most; beyond, ``put`` writes on the caller's thread."""
READ_BATCH = 256
"""Refs read by one ``ray.get`` of the reader thread at most."""
DEFAULT_HOT_BYTES = 32 * 1024 * 1024


class RayValue:
    """The handle of one value: its ``ObjectRef`` once written, and the value while in process."""

    __slots__ = ("ref", "released", "size", "value")

    def __init__(self, value: str, size: int) -> None:
        self.value: str | None = value
        self.size = size
        self.ref: Any = None
        self.released = False


class RayStore(ValueStore[RayValue]):
    """Values in the object store; handles are ``RayValue``s holding refs owned by this process."""

    name = "ray"

    def __init__(self, address: str | None = None, hot_bytes: int = DEFAULT_HOT_BYTES,
                 advertise_host: str = "") -> None:
        from llmlab_grpc.ray_runtime import ensure_ray

        if hot_bytes < 0:
            raise ValueError("hot_bytes must be 0 or more")
        self._ray = ensure_ray(address, advertise_host=advertise_host)
        from ray.exceptions import GetTimeoutError, RayError

        self._errors: tuple[type[BaseException], ...] = (RayError, GetTimeoutError)
        self.hot_bytes = hot_bytes
        self._lock = threading.Lock()
        self._hot: OrderedDict[RayValue, None] = OrderedDict()  # written values with a copy, LRU first
        self._hot_size = 0
        self._pending = 0  # values waiting for the writer
        self._write_failures = 0
        self._writes: queue.Queue[RayValue | None] = queue.Queue(WRITE_QUEUE)
        self._reads: list[tuple[RayValue, asyncio.Future[str]]] = []
        self._read_wake = threading.Condition(self._lock)
        self._closed = False
        self._writer = threading.Thread(target=self._write_forever, name="ray-store-writer", daemon=True)
        self._reader = threading.Thread(target=self._read_forever, name="ray-store-reader", daemon=True)
        self._writer.start()
        self._reader.start()

    # -- writes ---------------------------------------------------------------------------------

    def put(self, value: str) -> RayValue:
        handle = RayValue(value, len(value.encode("utf-8")))
        with self._lock:
            self._pending += 1
        try:
            self._writes.put_nowait(handle)
        except queue.Full:  # back-pressure: write here rather than hold more values in memory
            self._write(handle)
        return handle

    def _write(self, handle: RayValue) -> None:
        value = handle.value
        ref = None
        if value is not None and not handle.released:
            try:
                ref = self._ray.put(value)
            except self._errors as exc:
                with self._lock:
                    self._write_failures += 1
                log.warning("Ray object store refused a value (%s); it stays in process memory", exc)
        with self._lock:
            self._pending -= 1
            if handle.released or ref is None:
                return
            handle.ref = ref
            self._admit(handle)

    def _write_forever(self) -> None:
        while (handle := self._writes.get()) is not None:
            try:
                self._write(handle)
            except Exception:  # a bug here must not stop every later write
                log.exception("ray store writer failed")
            finally:
                self._writes.task_done()
        self._writes.task_done()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every value put so far is in Ray (tests, shutdown); False on timeout."""
        done = threading.Event()

        def wait() -> None:
            self._writes.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    # -- the in-process copies (lock held) -----------------------------------------------------

    def _admit(self, handle: RayValue) -> None:
        """Keep ``handle``'s copy as the most recent, then drop the oldest copies over budget."""
        if handle in self._hot:
            self._hot.move_to_end(handle)
        else:
            self._hot[handle] = None
            self._hot_size += handle.size
        while self._hot_size > self.hot_bytes and self._hot:
            oldest, _ = self._hot.popitem(last=False)
            self._hot_size -= oldest.size
            oldest.value = None  # it is in Ray: reads go there from now on

    def _touch(self, handle: RayValue) -> str | None:
        value = handle.value
        if value is not None and handle in self._hot:
            self._hot.move_to_end(handle)
        return value

    # -- reads ----------------------------------------------------------------------------------

    def get(self, handle: RayValue) -> str:
        with self._lock:
            value = self._touch(handle)
            ref = handle.ref
        if value is not None:
            return value
        if ref is None:
            raise StoreUnavailable("the value was released")
        try:
            stored: str = self._ray.get(ref, timeout=GET_TIMEOUT_S)  # put by this store: a str
        except self._errors as exc:
            raise StoreUnavailable(f"Ray object store lost the value: {type(exc).__name__}") from exc
        self._keep(handle, stored)
        return stored

    def copies_allowed(self) -> bool:
        """``--cache-hot-bytes 0`` asks for no in-process copies: every hit reads Ray."""
        return self.hot_bytes > 0

    def peek(self, handle: RayValue) -> str | None:
        """The hot copy (or the value still waiting for the writer), else None: read it with ``aget``."""
        with self._lock:
            return self._touch(handle)

    async def aget(self, handle: RayValue) -> str:
        future: asyncio.Future[str] | None = None
        with self._lock:
            value = self._touch(handle)
            if value is None and handle.ref is not None and not self._closed:
                future = asyncio.get_running_loop().create_future()
                self._reads.append((handle, future))
                self._read_wake.notify()
        if value is not None:
            return value
        if future is None:
            return self.get(handle)  # released (raises) or closed
        try:
            return await asyncio.wait_for(future, GET_TIMEOUT_S + 1.0)
        except TimeoutError as exc:
            raise StoreUnavailable("Ray object store did not answer a read in time") from exc

    def _keep(self, handle: RayValue, value: str) -> None:
        with self._lock:
            if not handle.released and handle.ref is not None and self.hot_bytes:
                handle.value = value
                self._admit(handle)

    def _read_forever(self) -> None:
        while True:
            with self._lock:
                while not self._reads and not self._closed:
                    self._read_wake.wait()
                if self._closed and not self._reads:
                    return
                batch, self._reads = self._reads[:READ_BATCH], self._reads[READ_BATCH:]
            try:
                self._read(batch)
            except Exception:  # a bug here must not stop every later read
                log.exception("ray store reader failed")

    def _read(self, batch: list[tuple[RayValue, asyncio.Future[str]]]) -> None:
        try:
            values = self._ray.get([handle.ref for handle, _ in batch], timeout=GET_TIMEOUT_S)
            outcomes: list[str | BaseException] = list(values)
        except self._errors:  # one lost value fails the batch: read each alone to know which
            outcomes = []
            for handle, _ in batch:
                try:
                    outcomes.append(self._ray.get(handle.ref, timeout=GET_TIMEOUT_S))
                except self._errors as exc:
                    outcomes.append(StoreUnavailable(f"Ray object store lost the value: {type(exc).__name__}"))
        for (handle, future), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, str):
                self._keep(handle, outcome)
            _resolve(future, outcome)

    # -- the rest of the interface --------------------------------------------------------------

    def adopt(self, obj: Any) -> tuple[str, RayValue]:
        if isinstance(obj, str):
            return obj, self.put(obj)
        try:
            value = self._ray.get(obj, timeout=GET_TIMEOUT_S)
        except self._errors as exc:
            raise StoreUnavailable(f"could not read the ObjectRef to cache it: {type(exc).__name__}: {exc}") from exc
        if not isinstance(value, str):
            raise InvalidCacheRequest(f"a cached response must be a string, the ObjectRef held {type(value).__name__}")
        return value, self.put(value)  # the copy is owned by this process, whoever made the original

    def release(self, handle: RayValue) -> None:
        with self._lock:
            handle.released = True
            if handle in self._hot:
                del self._hot[handle]
                self._hot_size -= handle.size
            handle.value = None
            handle.ref = None  # the last reference: Ray frees the object

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"store_hot_entries": len(self._hot), "store_hot_bytes": self._hot_size,
                    "store_hot_max_bytes": self.hot_bytes, "store_pending_writes": self._pending,
                    "store_write_failures": self._write_failures}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._read_wake.notify_all()
            self._hot.clear()
            self._hot_size = 0
        with contextlib.suppress(queue.Full):
            self._writes.put(None, timeout=1.0)
        self._writer.join(timeout=2.0)
        self._reader.join(timeout=2.0)


def _resolve(future: asyncio.Future[str], outcome: str | BaseException) -> None:
    """Settle ``future`` on its own loop (the reader thread is not that loop's thread)."""

    def settle() -> None:
        if future.done():  # the caller gave up (timeout, cancelled)
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        future.get_loop().call_soon_threadsafe(settle)
