"""Value stores behind one interface: ``memory`` and ``ray``."""

from __future__ import annotations

from llmlab_grpc.cache.stores.base import ValueStore
from llmlab_grpc.cache.stores.memory import MemoryStore

STORES: tuple[str, ...] = ("ray", "memory")


def make_store(name: str, ray_address: str | None = None) -> ValueStore:
    """Build the store named by the ``cache_store`` setting (``ray`` starts Ray if needed)."""
    if name == "memory":
        return MemoryStore()
    if name == "ray":
        from llmlab_grpc.cache.stores.ray_store import RayStore  # imports Ray only when asked for

        return RayStore(ray_address)
    raise ValueError(f"unknown cache store {name!r}; choose from {', '.join(STORES)}")


__all__ = ["STORES", "MemoryStore", "ValueStore", "make_store"]
