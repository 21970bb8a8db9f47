"""What the cache hands out: an entry's metadata, and the entry with its response.

Plain frozen dataclasses rather than the proto, so callers in the same process (the
planner, the replicator) get typed values and cannot mutate the cache's state through
them; ``to_proto``/``from_proto`` convert at the gRPC edge.
"""

from __future__ import annotations

import json
import sys
from array import array
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from llmlab_grpc.cache.keys import normalize_params, params_to_proto
from llmlab_grpc.proto.llmlab.v1 import common_pb2

ENTRY_OVERHEAD_BYTES = 1024
"""What an entry costs besides its strings: the index slot, its dict and heap items, the params
dict, the store's handle. Measured with tracemalloc: about 800 bytes besides the strings (memory store)."""


_STR_HEADER = sys.getsizeof("")
_WIDE_HEADER = sys.getsizeof("\u00e9") - 1


def text_bytes(text: str) -> int:
    """What keeping ``text`` costs: its size in memory or in UTF-8, whichever is larger.

    Python keeps a string with one wide character at 4 bytes per character, so UTF-8 alone
    would undercount ``"a" * n + "\U0001f600"`` four times over. Computed from the text alone
    (``sys.getsizeof`` also counts a UTF-8 copy Python may have cached), so one entry always
    costs the same.
    """
    if text.isascii():
        return _STR_HEADER + len(text)
    top = ord(max(text))
    width = 1 if top < 0x100 else 2 if top < 0x10000 else 4
    return max(_WIDE_HEADER + width * len(text), len(text.encode("utf-8")))


def params_bytes(params: dict[str, Any]) -> int:
    """UTF-8 bytes of normalised params as canonical JSON: what ``cache_max_params_bytes`` limits."""
    if not params:
        return 0
    return len(json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def stored_bytes(key: str, prompt: str, model: str, params: dict[str, Any], response: str) -> int:
    """Every byte one entry holds, as counted against ``cache_max_bytes``: key, prompt, model,
    params, response, checksum and the fixed per-entry overhead."""
    return (text_bytes(key) + text_bytes(prompt) + text_bytes(model) + params_bytes(params) + text_bytes(response)
            + 64 + ENTRY_OVERHEAD_BYTES)


def _write_params(out: common_pb2.GenerationParams, params: dict[str, Any]) -> None:
    """Normalised params (what every entry holds) into ``out``; anything else is normalised first."""
    try:
        for name, value in params.items():
            if name == "stop":
                out.stop.extend(value)
            else:
                setattr(out, name, value)
    except (AttributeError, TypeError, ValueError):
        out.Clear()
        out.CopyFrom(params_to_proto(params))


def write_proto(out: common_pb2.CacheEntry, base: Any, response: str, hits: int, extras: Any | None
                ) -> common_pb2.CacheEntry:
    """Write one entry into ``out`` field by field and return it.

    ``base`` has the key, prompt, model, params, times, sizes, checksum, critical flag and
    primary; ``extras`` (``EntryExtras``, a ``CacheEntry`` or None) the namespace, writer, usage
    and semantic fields. Used by ``CacheEntry.to_proto`` and by the gRPC hit path, which writes
    straight into its reply's entry: several times cheaper than keyword construction (upb) and
    a copy into the reply, and no ``CacheEntry`` is built for a hit at all.
    """
    out.key = base.key
    out.prompt = base.prompt
    out.model = base.model
    out.response = response
    out.created_unix_ms = base.created_unix_ms
    out.expires_unix_ms = base.expires_unix_ms
    out.hits = hits
    out.size_bytes = base.size_bytes
    out.checksum = base.checksum
    out.critical = base.critical
    out.primary_node_id = base.primary_node_id
    out.params.SetInParent()
    if base.params:
        _write_params(out.params, base.params)
    usage = out.usage
    usage.SetInParent()
    if extras is not None:
        out.namespace = extras.namespace
        out.writer = extras.writer
        usage.prompt_tokens = extras.prompt_tokens
        usage.completion_tokens = extras.completion_tokens
        usage.finish_reason = extras.finish_reason
        out.semantic_text = extras.semantic_text
        out.context_hash = extras.context_hash
        if extras.embedding:
            out.embedding.extend(array("f", extras.embedding))
    return out


@dataclass(frozen=True)
class _EntryCore:
    """What every entry has: its key inputs, times, counters and owner."""

    key: str
    prompt: str
    model: str
    params: dict[str, Any]
    created_unix_ms: int
    expires_unix_ms: int
    hits: int
    size_bytes: int
    checksum: str
    critical: bool = False
    primary_node_id: str = ""


@dataclass(frozen=True)
class ExtraFields:
    """What an entry may carry besides its key inputs and response: namespace, writer, the
    generation's usage, the semantic cache's text, context hash and vector. One declaration
    for ``EntryMeta`` and for the ``EntryExtras`` a caller hands to ``CacheManager.put``."""

    namespace: str = ""
    writer: str = ""
    """Empty for the mesh; else the per-user API key that stored it (a private entry)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    semantic_text: str = ""
    context_hash: str = ""
    embedding: bytes = b""
    """float32 vector (``array('f')`` bytes) of ``semantic_text``; empty when not indexed."""


@dataclass(frozen=True)
class EntryMeta(ExtraFields, _EntryCore):
    """An entry without its response: cheap to list, e.g. hottest first for replication.

    Its fields: ``_EntryCore``'s, then ``ExtraFields``', then ``stored_bytes``."""

    stored_bytes: int = 0
    """Bytes the entry costs this node's cache (``stored_bytes()``); ``size_bytes`` is the response's."""

    def expired(self, now_unix_ms: int) -> bool:
        return now_unix_ms >= self.expires_unix_ms


@dataclass(frozen=True)
class CacheEntry(EntryMeta):
    """One cached LLM response with its metadata."""

    response: str = field(default="", kw_only=True)

    def to_proto(self) -> common_pb2.CacheEntry:
        return write_proto(common_pb2.CacheEntry(), self, self.response, self.hits, self)

    @classmethod
    def from_proto(cls, proto: common_pb2.CacheEntry) -> CacheEntry:
        return cls(
            key=proto.key,
            prompt=proto.prompt,
            model=proto.model,
            params=normalize_params(proto.params),
            created_unix_ms=proto.created_unix_ms,
            expires_unix_ms=proto.expires_unix_ms,
            hits=proto.hits,
            size_bytes=proto.size_bytes,
            checksum=proto.checksum,
            critical=proto.critical,
            primary_node_id=proto.primary_node_id,
            namespace=proto.namespace,
            writer=proto.writer,
            prompt_tokens=proto.usage.prompt_tokens,
            completion_tokens=proto.usage.completion_tokens,
            finish_reason=proto.usage.finish_reason,
            semantic_text=proto.semantic_text,
            context_hash=proto.context_hash,
            embedding=array("f", proto.embedding).tobytes() if proto.embedding else b"",
            response=proto.response,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CachedAnswer(NamedTuple):
    """What this node's planner reads of a cache hit: the answer, which entry and node it came
    from, and the usage of the generation behind it (``CacheService.lookup_answer``).

    A tuple rather than a ``CacheEntry`` or a reply message: it is built for every hit the
    planner answers in-process, and a tuple of nine fields costs a fraction of either.
    """

    key: str
    prompt: str
    semantic_text: str
    namespace: str
    response: str
    node_id: str
    """The node holding it: this node, or the replica a read-through found it on."""
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str

    @classmethod
    def of(cls, entry: Any, node_id: str) -> CachedAnswer:
        """From a ``CacheEntry`` (or a ``common_pb2.CacheEntry``) held by ``node_id``."""
        usage = entry.usage if isinstance(entry, common_pb2.CacheEntry) else entry
        return cls(entry.key, entry.prompt, entry.semantic_text, entry.namespace, entry.response,
                   node_id or entry.primary_node_id, usage.prompt_tokens, usage.completion_tokens,
                   usage.finish_reason)
