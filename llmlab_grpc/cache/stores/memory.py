"""The in-memory store: the value is its own handle.

For light nodes without Ray (and the mobile node's equivalent), and the reference
behaviour for the shared test suite. It costs nothing per hit beyond the index lookup.
"""

from __future__ import annotations

from typing import Any

from llmlab_grpc.cache.errors import InvalidCacheRequest
from llmlab_grpc.cache.stores.base import ValueStore


class MemoryStore(ValueStore[str]):
    """Values kept as Python strings in the node process."""

    name = "memory"

    def put(self, value: str) -> str:
        return value

    def get(self, handle: str) -> str:
        return handle

    def peek(self, handle: str) -> str:
        return handle

    def adopt(self, obj: Any) -> tuple[str, str]:
        if isinstance(obj, str):
            return obj, obj
        import ray  # only a caller that already has an ObjectRef gets here, so Ray is running

        value = ray.get(obj)
        if not isinstance(value, str):
            raise InvalidCacheRequest(f"a cached response must be a string, the ObjectRef held {type(value).__name__}")
        return value, value
