"""The Ray store: values live in Ray's object store as ``ObjectRef``s owned by the node.

Ownership (DESIGN.md, "Ray object store"): a Ray object lives as long as its *owner*
(the worker that created it, by ``ray.put`` or by calling the task that returned it) is
alive and someone holds a reference. So the owner must live exactly as long as the
cache. That is the node process itself: it is the Ray driver, every ``ray.put`` here
runs in it, and the index holding the refs is a Python dict in it. Two consequences:

* A hit is one ``ray.get`` of a ref this process owns, read from the local shared
  memory store: no actor hop (DESIGN.md §5: ~0.6 ms for put+get of 1 KB, an actor
  call ~0.75 ms on top). A named detached actor as holder would cost that hop on every
  hit, and would outlive the node for nothing: when the node dies its cache is gone
  anyway, and replication (issue 6) is what keeps entries alive across node deaths.
* Values made elsewhere are copied in (``adopt``): an ``ObjectRef`` produced by a
  task or an actor may be owned by that worker (e.g. it called ``ray.put`` itself and
  returned the ref), and would raise ``OwnerDiedError`` once that worker exits. The
  cache ``ray.get``s it once and ``ray.put``s the value again, so the copy it keeps
  is owned by the node. tests/test_cache_ray.py kills such an actor and reads the entry.

Ray must have been started on the process's main thread (``ensure_ray``): Ray ties
the local cluster's processes to the thread that started them.
"""

from __future__ import annotations

import logging
from typing import Any

from llmlab_grpc.cache.errors import InvalidCacheRequest, StoreUnavailable
from llmlab_grpc.cache.stores.base import ValueStore

log = logging.getLogger(__name__)
GET_TIMEOUT_S = 5.0
"""A local ``ray.get`` takes well under a millisecond; this only bounds a wedged Ray."""


class RayStore(ValueStore):
    """Values in the object store; handles are ``ObjectRef``s owned by this process."""

    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        from llmlab_grpc.ray_runtime import ensure_ray

        self._ray = ensure_ray(address)
        from ray.exceptions import GetTimeoutError, RayError

        self._errors: tuple[type[BaseException], ...] = (RayError, GetTimeoutError)

    def put(self, value: str) -> Any:
        try:
            return self._ray.put(value)
        except self._errors as exc:
            raise StoreUnavailable(f"Ray object store refused the value: {exc}") from exc

    def get(self, handle: Any) -> str:
        try:
            return self._ray.get(handle, timeout=GET_TIMEOUT_S)  # type: ignore[no-any-return]
        except self._errors as exc:
            raise StoreUnavailable(f"Ray object store lost the value: {type(exc).__name__}") from exc

    def adopt(self, obj: Any) -> tuple[str, Any]:
        if isinstance(obj, str):
            return obj, self.put(obj)
        try:
            value = self._ray.get(obj, timeout=GET_TIMEOUT_S)
        except self._errors as exc:
            raise StoreUnavailable(f"could not read the ObjectRef to cache it: {type(exc).__name__}: {exc}") from exc
        if not isinstance(value, str):
            raise InvalidCacheRequest(f"a cached response must be a string, the ObjectRef held {type(value).__name__}")
        return value, self.put(value)  # the copy is owned by this process, whoever made the original
