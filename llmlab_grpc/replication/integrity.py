"""Checking a copy that came over the network before anyone uses it.

A copy from a replica is only as good as the node that kept it: memory can flip, a
buggy or stale node can send the wrong entry. So a fetched entry is returned only when
its key is the key asked for *and* the key recomputed from its own prompt, model,
params and namespace, its response hashes to its sha256 checksum, and it has not expired. Anything
else is refused (and never stored), and the reader goes on to the next copy.
"""

from __future__ import annotations

from llmlab_grpc.cache.entry import CacheEntry
from llmlab_grpc.cache.keys import InvalidParams, cache_key, checksum
from llmlab_grpc.proto.llmlab.v1 import common_pb2


class RefusedCopy(ValueError):
    """A copy that failed verification; the message says which check."""


def verify_copy(proto: common_pb2.CacheEntry, key: str, now_unix_ms: int) -> CacheEntry:
    """The entry as a ``CacheEntry`` when it is a live, intact copy of ``key``; ``RefusedCopy`` otherwise."""
    if proto.key != key:
        raise RefusedCopy(f"asked for {key[:12]}…, got an entry keyed {proto.key[:12]}…")
    try:
        entry = CacheEntry.from_proto(proto)
        recomputed = cache_key(entry.prompt, entry.model, entry.params, entry.namespace)
    except InvalidParams as exc:
        raise RefusedCopy(f"entry {key[:12]}… has unusable params: {exc}") from exc
    if recomputed != key:
        raise RefusedCopy(f"entry {key[:12]}…: its prompt, model and params hash to another key")
    if checksum(entry.response) != entry.checksum:
        raise RefusedCopy(f"entry {key[:12]}…: response does not match its sha256 checksum")
    if entry.expired(now_unix_ms):
        raise RefusedCopy(f"entry {key[:12]}… has expired")
    return entry
