"""Cache errors, each mapped to one gRPC status by the service."""

from __future__ import annotations

from llmlab_grpc.cache.keys import InvalidParams


class InvalidCacheRequest(ValueError):
    """The request cannot be served as given (gRPC: INVALID_ARGUMENT)."""


class ValueTooLarge(InvalidCacheRequest):
    """A value over the per-entry limit; the message names the limit and its setting."""


class CorruptEntry(InvalidCacheRequest):
    """An entry whose key or checksum does not match its content (e.g. a bad replica copy)."""


class StoreUnavailable(RuntimeError):
    """The value store cannot take or give values now, e.g. Ray is down (gRPC: UNAVAILABLE)."""


__all__ = ["CorruptEntry", "InvalidCacheRequest", "InvalidParams", "StoreUnavailable", "ValueTooLarge"]
