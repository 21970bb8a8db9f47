"""The one interface both value stores implement.

The manager owns the index (keys, metadata, LRU order, expiry) and asks a store only
to hold values: ``put`` returns a handle, ``get`` turns a handle back into the value,
and dropping the handle (``release``) frees it. Keeping the policy in the manager is
what lets one behaviour test suite run unchanged against every store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, TypeVar

H = TypeVar("H")
"""A store's handle type: opaque to the manager, which only hands it back."""


class ValueStore(ABC, Generic[H]):
    """Holds response strings and hands back opaque handles (of type ``H``) to them."""

    name: ClassVar[str]

    @abstractmethod
    def put(self, value: str) -> H:
        """Store ``value``; return a handle that keeps it alive while the manager holds it.

        Raises ``StoreUnavailable`` when the store cannot take values now.
        """

    @abstractmethod
    def get(self, handle: H) -> str:
        """The value behind ``handle``. Raises ``StoreUnavailable`` when it was lost."""

    def copies_allowed(self) -> bool:
        """Whether values may be copied into process memory beside the store: the manager then
        keeps hot entries serialized (``CacheManager.aget_wire``, within ``cache_max_bytes``)."""
        return True

    def peek(self, handle: H) -> str | None:
        """The value when the store holds it in process (no waiting, no I/O), else None: then ``aget``.

        The hit path of ``Cache.Get`` asks this first, saving a coroutine per hit."""
        return None

    async def aget(self, handle: H) -> str:
        """``get`` for asyncio callers; a store whose reads wait (Ray) waits off the event loop."""
        return self.get(handle)

    @abstractmethod
    def adopt(self, obj: Any) -> tuple[str, H]:
        """Take ownership of a value made elsewhere (a Ray ``ObjectRef``): ``(value, handle)``."""

    def release(self, handle: H) -> None:
        """The manager no longer holds ``handle``; the default relies on reference counting."""

    def stats(self) -> dict[str, int]:
        """The store's own figures (``store_*`` keys), merged into the cache's statistics."""
        return {}

    def close(self) -> None:
        """Release everything the store holds; called when the node stops."""
