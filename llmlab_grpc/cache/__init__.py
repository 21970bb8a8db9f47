"""The LLM response cache: key, manager (TTL, LRU, limits, stats), stores, gRPC service.

In-process use (the planner)::

    manager = node.components["cache"].manager           # or CacheManager(MemoryStore())
    answer = manager.get(prompt, model, params)          # None on a miss
    manager.put(prompt, model, answer, params)           # after a complete, successful answer
"""

from __future__ import annotations

from llmlab_grpc.cache.entry import CacheEntry, EntryMeta
from llmlab_grpc.cache.errors import CorruptEntry, InvalidCacheRequest, InvalidParams, StoreUnavailable, ValueTooLarge
from llmlab_grpc.cache.hooks import CacheListener, PeerSource
from llmlab_grpc.cache.keys import KEY_PARAMS, cache_key, is_deterministic, normalize_params, params_to_proto
from llmlab_grpc.cache.manager import CacheManager

__all__ = [
    "KEY_PARAMS",
    "CacheEntry",
    "CacheListener",
    "CacheManager",
    "CorruptEntry",
    "EntryMeta",
    "InvalidCacheRequest",
    "InvalidParams",
    "PeerSource",
    "StoreUnavailable",
    "ValueTooLarge",
    "cache_key",
    "is_deterministic",
    "normalize_params",
    "params_to_proto",
]
