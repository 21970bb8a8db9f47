"""Value stores behind one interface: ``memory`` and ``ray``."""

from __future__ import annotations

from typing import Any

from llmlab_grpc.cache.stores.base import ValueStore
from llmlab_grpc.cache.stores.memory import MemoryStore

STORES: tuple[str, ...] = ("ray", "memory")


def make_store(name: str, ray_address: str | None = None, hot_bytes: int | None = None,
               advertise_host: str = "") -> ValueStore[Any]:
    """Build the store named by the ``cache_store`` setting (``ray`` starts Ray if needed, see ``ensure_ray``).

    ``hot_bytes``: the Ray store's budget of in-process copies of hot values (its default when None).
    """
    if name == "memory":
        return MemoryStore()
    if name == "ray":
        from llmlab_grpc.cache.stores.ray_store import RayStore  # imports Ray only when asked for

        if hot_bytes is None:
            return RayStore(ray_address, advertise_host=advertise_host)
        return RayStore(ray_address, hot_bytes=hot_bytes, advertise_host=advertise_host)
    raise ValueError(f"unknown cache store {name!r}; choose from {', '.join(STORES)}")


__all__ = ["STORES", "MemoryStore", "ValueStore", "make_store"]
