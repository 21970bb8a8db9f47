"""How one query uses the cache: its own controls, else its namespace's defaults, else the node's.

``Query.cache`` (``CacheControl``) may set the namespace, a TTL for what it stores, a
maximum age for what it accepts, and semantic matching with its threshold. Fields it
leaves unset come from the node's ``cache_namespaces`` policy for that namespace, then
from the node (``semantic_cache``, ``semantic_min_similarity``; the cache node's own TTL).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from llmlab_grpc.cache.keys import InvalidParams, check_namespace
from llmlab_grpc.proto.llmlab.v1 import planner_pb2


@dataclass(frozen=True)
class CacheControls:
    """The resolved cache controls of one query."""

    namespace: str = ""
    ttl_s: float | None = None
    max_age_s: float | None = None
    semantic: bool = False
    min_similarity: float = 0.9
    writer: str = ""


MEMO_ENTRIES = 256
"""Resolved controls remembered (least recently used out): every query asks for its controls,
and a frozen dataclass costs several times more to build than to find again."""
MEMO_MAX_WRITER_CHARS = 256
"""Controls naming a longer writer are built afresh, so the memo holds ~100 KiB at most."""


@functools.lru_cache(maxsize=MEMO_ENTRIES)
def _remembered(namespace: str, ttl_s: float | None, max_age_s: float | None, semantic: bool,
                min_similarity: float, writer: str) -> CacheControls:
    return CacheControls(namespace=namespace, ttl_s=ttl_s, max_age_s=max_age_s, semantic=semantic,
                         min_similarity=min_similarity, writer=writer)


def _semantic(policy: Any, settings: Any) -> bool:
    if policy is not None and policy.semantic is not None:
        return bool(policy.semantic)
    return bool(getattr(settings, "semantic_cache", False))


def _min_similarity(policy: Any, settings: Any) -> float:
    if policy is not None and policy.min_similarity is not None:
        return float(policy.min_similarity)
    return float(getattr(settings, "semantic_min_similarity", 0.9))


def resolve(query: planner_pb2.Query, settings: Any) -> CacheControls:
    """``query``'s controls over its namespace's policy over the node's settings.

    Raises ``ValueError`` naming the field when a control is unusable (INVALID_ARGUMENT).
    Read afresh for every query (a policy changed in ``settings`` applies to the next one);
    only the resulting immutable ``CacheControls`` is remembered.
    """
    namespace = writer = ""
    if not query.HasField("cache"):  # the usual query: the default namespace's policy, else the node's
        policy = getattr(settings, "cache_namespaces", {}).get("")
        if policy is None:  # no policy: the node's settings alone (no attribute looked up on None)
            min_similarity = float(getattr(settings, "semantic_min_similarity", 0.9))
            if not 0 < min_similarity <= 1:
                raise ValueError(f"cache.min_similarity must be in (0, 1], not {min_similarity}")
            return _remembered("", None, None, bool(getattr(settings, "semantic_cache", False)), min_similarity, "")
        ttl_s = getattr(policy, "ttl_s", None)
        max_age_s = getattr(policy, "max_age_s", None)
        semantic = _semantic(policy, settings)
        min_similarity = _min_similarity(policy, settings)
    else:
        control = query.cache
        namespace = control.namespace
        writer = control.writer
        if namespace:  # the default namespace is always usable
            try:
                namespace = check_namespace(namespace)
            except InvalidParams as exc:
                raise ValueError(str(exc)) from exc
        policy = getattr(settings, "cache_namespaces", {}).get(namespace)
        ttl_s = control.ttl_s if control.HasField("ttl_s") else getattr(policy, "ttl_s", None)
        max_age_s = control.max_age_s if control.HasField("max_age_s") else getattr(policy, "max_age_s", None)
        semantic = control.semantic if control.HasField("semantic") else _semantic(policy, settings)
        min_similarity = (control.min_similarity if control.HasField("min_similarity")
                          else _min_similarity(policy, settings))
    if ttl_s is not None and not 0 < ttl_s <= 30 * 86400:
        raise ValueError(f"cache.ttl_s must be between 0 and 30 days (2592000 s), not {ttl_s}")
    if max_age_s is not None and max_age_s < 0:
        raise ValueError(f"cache.max_age_s must be 0 or more seconds, not {max_age_s}")
    if not 0 < min_similarity <= 1:
        raise ValueError(f"cache.min_similarity must be in (0, 1], not {min_similarity}")
    if len(writer) <= MEMO_MAX_WRITER_CHARS:
        return _remembered(namespace, ttl_s, max_age_s, semantic, min_similarity, writer)
    return CacheControls(namespace=namespace, ttl_s=ttl_s, max_age_s=max_age_s, semantic=semantic,
                         min_similarity=min_similarity, writer=writer)
