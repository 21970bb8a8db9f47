"""``CacheManager``: the LLM response cache of one node — key, TTL, LRU, limits, statistics.

Concurrency model: **synchronous and thread-safe**. Every method takes one
``threading.Lock`` for a few dictionary operations and never waits on the network, so
it can be called directly from asyncio code (the planner, the gRPC service), from
threads (the sync gRPC client, benchmarks) or both at once. Store work (``ray.put``,
``ray.get``: well under a millisecond for a local object) runs outside the lock, and
counters only change under it, so concurrent puts and gets lose no update. asyncio
callers use ``aget_by_key``, which lets a store read off the event loop (the Ray store
writes behind and keeps hot values in process: ``stores/ray_store.py``).

Policy lives here, once, whatever the store (``stores/``):

* **Key**: ``keys.cache_key`` (prompt, model, generation-affecting params, namespace).
* **TTL**: per entry on ``put``, else the namespace's default (``namespace_ttl_s``), else
  ``ttl_s``. A lookup may also ask for a maximum age (``max_age_s``): an older entry is a
  miss for that caller and stays for others. An expired entry is never
  returned; it is reclaimed lazily when touched, and by ``sweep`` (the cache role runs
  it periodically; ``put`` runs it before evicting) from a heap ordered by expiry, so a
  sweep costs only the entries that did expire. A TTL above ``max_ttl_s`` is capped to
  it, and so is the expiry of a copy from a peer.
* **LRU**: an ``OrderedDict`` in access order. After a put, expired entries go first,
  then least recently used ones until both the byte budget (``max_bytes``) and the entry
  cap (``max_entries``) hold. The budget counts every byte an entry keeps
  (``entry.stored_bytes``: key, prompt, model, params, response, checksum, the extras
  such as the semantic text and embedding, and a fixed overhead), so memory is bounded by
  what is stored, not only by the answers.
* **Limits**: a response over ``max_value_bytes``, a prompt over ``max_prompt_bytes``,
  params (``tools_json``, ``system_prompt``, ``stop``) over ``max_params_bytes`` or a whole
  entry over ``max_bytes`` is refused with ``ValueTooLarge`` naming the limit; it would
  otherwise evict a large part of the cache. Sizes are checked before anything is hashed.

Hooks for replication (issue 6), through ``hooks.py`` only (this package imports no
replication code): ``get_by_key``/``put_entry`` work on keys and whole
entries (``put_entry`` verifies key and checksum and never resurrects an expired
entry), ``describe`` lists entries hottest first (hit counts feed priority), entries
whose ``primary_node_id`` is another node count as ``replica_entries``, listeners
(``hooks.CacheListener``) hear every put and removal, and an attached ``hooks.PeerSource``
gives the ``replication_shortfall`` figure. Whether a non-deterministic answer may be cached
(``keys.is_deterministic``) is the caller's decision, not the cache's.

Semantic cache: an entry stored with an ``embedding`` is added to ``index`` (a
``semantic.SemanticIndex``, when the node has one) and leaves it with the entry, whatever
removes it; a replica copy brings its vector along, so the index of every node that
holds an entry can find it. The entry's row there (the vector again as float32 and as int8
codes, its similarity slot and bookkeeping: ``SemanticIndex.row_cost``, ~2.1 KB) counts in the entry's
bytes like the vector the entry itself holds, so the budget bounds the index too.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmlab_grpc.cache.entry import (
    CachedAnswer,
    CacheEntry,
    EntryMeta,
    ExtraFields,
    params_bytes,
    stored_bytes,
    text_bytes,
    write_proto,
)
from llmlab_grpc.cache.errors import CorruptEntry, InvalidCacheRequest, StoreUnavailable, ValueTooLarge
from llmlab_grpc.cache.hooks import CacheListener, PeerSource
from llmlab_grpc.cache.keys import Params, cache_key, check_namespace, checksum, normalize_params
from llmlab_grpc.cache.namespace_stats import NamespaceStats
from llmlab_grpc.cache.stores import MemoryStore, ValueStore, make_store
from llmlab_grpc.proto.llmlab.v1 import common_pb2

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 3600.0
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024
DEFAULT_MAX_PROMPT_BYTES = 1024 * 1024
DEFAULT_MAX_PARAMS_BYTES = 256 * 1024
DEFAULT_MAX_TTL_S = 30 * 86400.0
MAX_MODEL_BYTES = 1024
"""Longest model name an entry may carry."""

Clock = Callable[[], float]
"""Seconds since the epoch, like ``time.time``; tests inject a fake one to move time."""


@dataclass(frozen=True)
class EntryExtras(ExtraFields):
    """The extra fields of one put (``ExtraFields``), apart from any entry."""

    def fields(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    def stored_bytes(self) -> int:
        """What these fields cost the cache (strings as ``text_bytes``, the embedding as its bytes)."""
        return sum(text_bytes(v) if isinstance(v, str) else len(v) + 33 if isinstance(v, bytes) else 0
                   for v in self.fields().values())

    @classmethod
    def of(cls, entry: EntryMeta) -> EntryExtras | None:
        extras = cls(**{f: getattr(entry, f) for f in cls.__dataclass_fields__})
        return None if extras == _NO_EXTRAS else extras


_NO_EXTRAS = EntryExtras()


@dataclass
class _Slot:
    """One entry in the index: metadata plus the store's handle to the value."""

    key: str
    prompt: str
    model: str
    params: dict[str, Any]
    created_unix_ms: int
    expires_unix_ms: int
    size_bytes: int
    checksum: str
    critical: bool
    primary_node_id: str
    handle: Any
    hits: int = 0
    seq: int = 0
    extras: EntryExtras | None = None
    stored_bytes: int = 0
    figures: dict[str, int] = field(default_factory=dict)
    """Its namespace's figures in the manager's ``NamespaceStats`` (set when stored), where a hit is counted."""
    wire: bytes | None = None
    """The entry serialized but its hit count, once a hit through ``aget_wire`` made it and the
    byte budget had room for it (``CacheManager._remember_wire``)."""

    def _extra_fields(self) -> dict[str, Any]:
        return {} if self.extras is None else self.extras.fields()

    def meta(self) -> EntryMeta:
        return EntryMeta(
            key=self.key, prompt=self.prompt, model=self.model, params=dict(self.params),
            created_unix_ms=self.created_unix_ms, expires_unix_ms=self.expires_unix_ms, hits=self.hits,
            size_bytes=self.size_bytes, checksum=self.checksum, critical=self.critical,
            primary_node_id=self.primary_node_id, stored_bytes=self.stored_bytes, **self._extra_fields(),
        )

    def entry(self, response: str, hits: int | None = None) -> CacheEntry:
        return CacheEntry(
            key=self.key, prompt=self.prompt, model=self.model, params=dict(self.params),
            created_unix_ms=self.created_unix_ms, expires_unix_ms=self.expires_unix_ms,
            hits=self.hits if hits is None else hits, size_bytes=self.size_bytes, checksum=self.checksum,
            critical=self.critical, primary_node_id=self.primary_node_id, stored_bytes=self.stored_bytes,
            response=response, **self._extra_fields(),
        )


WIRE_OVERHEAD_BYTES = 100
"""What keeping one serialized entry costs besides its bytes: the bytes object and its dict slot."""


def _wire_cost(fixed: bytes) -> int:
    return len(fixed) + WIRE_OVERHEAD_BYTES


def _namespace(slot: _Slot) -> str:
    return slot.extras.namespace if slot.extras is not None else ""


class CacheManager:
    """The cache of one node. See the module docstring for the policy and the threading model."""

    def __init__(
        self,
        store: ValueStore[Any] | None = None,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        node_id: str = "",
        clock: Clock = time.time,
        namespace_ttl_s: dict[str, float] | None = None,
        max_prompt_bytes: int = DEFAULT_MAX_PROMPT_BYTES,
        max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES,
        max_ttl_s: float = DEFAULT_MAX_TTL_S,
    ) -> None:
        limits = (ttl_s, max_bytes, max_entries, max_value_bytes, max_prompt_bytes, max_params_bytes, max_ttl_s)
        if min(limits) <= 0:
            raise ValueError("cache ttl_s, max_ttl_s, max_bytes, max_entries and the per-field limits must be positive")
        if ttl_s > max_ttl_s:
            raise ValueError(f"the default ttl {ttl_s} s is above the maximum ttl {max_ttl_s} s")
        self.store = store or MemoryStore()
        self.ttl_s = ttl_s
        self.max_ttl_s = max_ttl_s
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.max_value_bytes = min(max_value_bytes, max_bytes)
        self.max_prompt_bytes = min(max_prompt_bytes, max_bytes)
        self.max_params_bytes = min(max_params_bytes, max_bytes)
        self.node_id = node_id
        self.namespace_ttl_s = dict(namespace_ttl_s or {})
        """Default TTL per namespace (config ``cache_namespaces``), used when a put names none."""
        self.index: Any = None
        """The node's ``SemanticIndex`` (set by the cache role when semantic lookups are on)."""
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: OrderedDict[str, _Slot] = OrderedDict()  # least recently used first
        self._expiry: list[tuple[int, int, str]] = []  # heap of (expires_unix_ms, seq, key)
        self._seq = itertools.count(1)
        self._bytes = 0
        self._wire_bytes = 0  # serialized entries kept for hits (``aget_wire``), within max_bytes too
        self._wired: dict[str, _Slot] = {}  # the slots holding one, oldest first
        self._replicas = 0
        self._by_namespace = NamespaceStats()
        self._counters = dict.fromkeys(("hits", "misses", "puts", "evictions", "expirations", "lost"), 0)
        self._listeners: list[CacheListener] = []
        self.peer_source: PeerSource | None = None
        """Read-through, write acks, mesh-wide deletes and the shortfall figure (``hooks.py``), when attached."""

    @classmethod
    def from_settings(cls, settings: Any, node_id: str = "", clock: Clock = time.time) -> CacheManager:
        """Build from ``NodeSettings`` (``cache_*`` fields; ``ray_address`` when present)."""
        store = make_store(settings.cache_store, getattr(settings, "ray_address", None) or None,
                           getattr(settings, "cache_hot_bytes", None), getattr(settings, "advertise_host", ""))
        return cls(
            store,
            ttl_s=settings.cache_ttl_s,
            max_bytes=settings.cache_max_bytes,
            max_entries=settings.cache_max_entries,
            max_value_bytes=settings.cache_max_value_bytes,
            max_prompt_bytes=settings.cache_max_prompt_bytes,
            max_params_bytes=settings.cache_max_params_bytes,
            max_ttl_s=settings.cache_max_ttl_s,
            node_id=node_id,
            clock=clock,
            namespace_ttl_s={name: policy.ttl_s for name, policy in getattr(settings, "cache_namespaces", {}).items()
                             if policy.ttl_s is not None},
        )

    # -- listeners ------------------------------------------------------------------------------

    def attach_peer_source(self, source: PeerSource | None) -> None:
        """Back this cache with ``source`` (the replica role), or with nothing again (None)."""
        self.peer_source = source

    def add_listener(self, listener: CacheListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: CacheListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify_put(self, entry: CacheEntry) -> None:
        for listener in list(self._listeners):
            try:
                listener.on_put(entry)
            except Exception:
                log.exception("cache listener %r failed on put", listener)

    def _notify_removed(self, removed: list[tuple[_Slot, str]]) -> None:
        for slot, _ in removed:
            self.store.release(slot.handle)
            if self.index is not None and slot.extras is not None and slot.extras.embedding:
                self.index.remove(slot.key)
        if not self._listeners:
            return
        for slot, reason in removed:
            meta = slot.meta()
            for listener in list(self._listeners):
                try:
                    listener.on_removed(meta, reason)
                except Exception:
                    log.exception("cache listener %r failed on delete", listener)

    # -- reads ----------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def now_ms(self) -> int:
        """The cache's clock (injected in tests), unix milliseconds."""
        return self._now_ms()

    def get(self, prompt: str, model: str, params: Params = None, namespace: str = "",
            max_age_s: float | None = None) -> str | None:
        """The cached response for this call, or ``None``. Counts a hit or a miss."""
        entry = self.get_by_key(cache_key(prompt, model, params, namespace), max_age_s=max_age_s, namespace=namespace)
        return None if entry is None else entry.response

    def get_by_key(self, key: str, record: bool = True, max_age_s: float | None = None, namespace: str = ""
                   ) -> CacheEntry | None:
        """The live entry for ``key``, or ``None``.

        With ``record`` (the default) this is a lookup: it counts a hit or a miss, bumps the
        entry's hit count and its LRU position. ``record=False`` only peeks. With
        ``max_age_s`` an entry created longer ago than that is a miss (and is kept). ``namespace``
        only says where a miss is counted (the key already holds it).
        """
        claimed = self._claim(key, record, max_age_s, namespace)
        if claimed is None:
            return None
        slot, hits = claimed
        try:
            value = self.store.get(slot.handle)
        except StoreUnavailable as exc:
            self._lost(key, slot, record, exc)
            return None
        return slot.entry(value, hits)

    async def aget_by_key(self, key: str, record: bool = True, max_age_s: float | None = None,
                          namespace: str = "") -> CacheEntry | None:
        """``get_by_key`` for asyncio callers: a store whose reads wait (Ray) waits off the event loop."""
        read = await self._aread(key, record, max_age_s, namespace)
        if read is None:
            return None
        slot, hits, value = read
        return slot.entry(value, hits)

    async def aget_answer(self, key: str, max_age_s: float | None = None, namespace: str = "",
                          node_id: str = "") -> CachedAnswer | None:
        """A lookup (counted as one) whose hit is a ``CachedAnswer`` held by ``node_id`` (default: the
        entry's primary); None on a miss. This node's planner answers from it in-process: no
        ``CacheEntry`` and no reply message are built for a hit. A value the store holds in process
        (``ValueStore.peek``) is read without a coroutine, as ``aget_wire`` does."""
        claimed = self._claim(key, True, max_age_s, namespace)
        if claimed is None:
            return None
        slot = claimed[0]
        value = self.store.peek(slot.handle)
        if value is None and (value := await self._fetch(key, slot)) is None:
            return None
        extras = slot.extras or _NO_EXTRAS
        return CachedAnswer(slot.key, slot.prompt, extras.semantic_text, extras.namespace, value,
                            node_id or slot.primary_node_id, extras.prompt_tokens, extras.completion_tokens,
                            extras.finish_reason)

    async def aget_into(self, key: str, out: common_pb2.CacheEntry, record: bool = True,
                        max_age_s: float | None = None, namespace: str = "") -> bool:
        """``aget_by_key`` written straight into ``out`` (a reply's entry); False on a miss.

        The gRPC hit path (``CacheService.lookup``): no ``CacheEntry`` is built and copied, the
        slot's fields go into the reply once (``entry.write_proto``).
        """
        read = await self._aread(key, record, max_age_s, namespace)
        if read is None:
            return False
        slot, hits, value = read
        write_proto(out, slot, value, hits, slot.extras)
        return True

    async def aget_wire(self, key: str, max_age_s: float | None = None, namespace: str = ""
                        ) -> tuple[bytes, int] | None:
        """The live entry of ``key`` as a serialized ``CacheEntry`` without its hit count, and
        that count; a hit is counted. None on a miss.

        The hit path of ``Cache.Get`` (``cache/wire.py``). An entry never changes (a put makes
        a new one), so the first hit serializes it and keeps the bytes with its slot when the
        store allows copies (``ValueStore.copies_allowed``: not the Ray store with
        ``--cache-hot-bytes 0``) and the budget has room: they count against ``max_bytes`` with
        the entries (``wire_bytes`` in the statistics). Later hits read neither the store nor
        the fields. The bytes go with their entry (replaced, deleted, expired, evicted, lost)
        and are dropped first when a put needs room, so an entry never makes way for them.
        """
        claimed = self._claim(key, True, max_age_s, namespace)
        if claimed is None:
            return None
        slot, hits = claimed
        wire = slot.wire
        if wire is None:
            value = self.store.peek(slot.handle)
            if value is None and (value := await self._fetch(key, slot)) is None:
                return None
            wire = self._remember_wire(slot, value)
        return wire, hits

    async def _fetch(self, key: str, slot: _Slot) -> str | None:
        """A claimed hit's value from a store that does not hold it in process (Ray: off the event
        loop); None, the entry dropped, when the store lost it. The hit paths try ``peek`` first,
        so a value held in process costs no coroutine."""
        try:
            return await self.store.aget(slot.handle)
        except StoreUnavailable as exc:
            self._lost(key, slot, True, exc)
            return None

    def _remember_wire(self, slot: _Slot, value: str) -> bytes:
        """``slot``'s entry but its hits, serialized; kept with it when the budget has room (``aget_wire``)."""
        proto = common_pb2.CacheEntry()
        write_proto(proto, slot, value, 0, slot.extras)
        wire = proto.SerializeToString()
        cost = _wire_cost(wire)
        if not self.store.copies_allowed():
            return wire
        with self._lock:
            if (slot.wire is None and self._slots.get(slot.key) is slot
                    and self._bytes + self._wire_bytes + cost <= self.max_bytes):
                slot.wire = wire
                self._wire_bytes += cost
                self._wired[slot.key] = slot
        return wire

    async def _aread(self, key: str, record: bool, max_age_s: float | None,
                     namespace: str) -> tuple[_Slot, int, str] | None:
        """The live slot of ``key``, its hits and its value, read off the event loop where the store
        waits (Ray); None on a miss, or when the store lost the value (the entry is dropped)."""
        claimed = self._claim(key, record, max_age_s, namespace)
        if claimed is None:
            return None
        slot, hits = claimed
        try:
            return slot, hits, await self.store.aget(slot.handle)
        except StoreUnavailable as exc:
            self._lost(key, slot, record, exc)
            return None

    def _claim(self, key: str, record: bool, max_age_s: float | None, namespace: str = ""
               ) -> tuple[_Slot, int] | None:
        """The index half of a lookup: the live slot and its hit count, counting the lookup."""
        now = int(self._clock() * 1000)  # _now_ms, inline: every hit of every path comes here
        removed: list[tuple[_Slot, str]] | None = None
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None and now >= slot.expires_unix_ms:
                removed = [(self._remove(key), "expired")]
                self._counters["expirations"] += 1
                self._by_namespace.count(_namespace(slot), "expirations")
                slot = None
            if slot is not None and max_age_s is not None and now - slot.created_unix_ms > max_age_s * 1000:
                slot = None
            if slot is None:
                if record:
                    self._counters["misses"] += 1
                    self._by_namespace.count(namespace, "misses")
            elif record:
                self._counters["hits"] += 1
                slot.figures["hits"] += 1
                slot.hits += 1
                self._slots.move_to_end(key)
            hits = slot.hits if slot is not None else 0
        if removed:
            self._notify_removed(removed)
        return None if slot is None else (slot, hits)

    def _lost(self, key: str, slot: _Slot, recorded: bool, exc: StoreUnavailable) -> None:
        log.warning("cache entry %s lost its value (%s); dropping it", key[:12], exc)
        self._drop_lost(key, slot, recorded)

    def _drop_lost(self, key: str, slot: _Slot, recorded: bool) -> None:
        removed = []
        with self._lock:
            if self._slots.get(key) is slot:
                removed.append((self._remove(key), "lost"))
            self._counters["lost"] += 1
            self._by_namespace.count(_namespace(slot), "lost")
            if recorded:  # it was counted as a hit, but the caller gets nothing
                self._counters["hits"] -= 1
                self._counters["misses"] += 1
                self._by_namespace.count(_namespace(slot), "hits", -1)
                self._by_namespace.count(_namespace(slot), "misses")
        self._notify_removed(removed)

    def get_entry(self, key: str) -> CacheEntry | None:
        """The live entry for ``key`` with its response, without counting a lookup."""
        return self.get_by_key(key, record=False)

    def contains(self, key: str) -> bool:
        """Whether a live entry exists for ``key`` (no lookup counted, value not read)."""
        now = self._now_ms()
        with self._lock:
            slot = self._slots.get(key)
            return slot is not None and now < slot.expires_unix_ms

    def describe(self, hottest_first: bool = True, limit: int | None = None) -> list[EntryMeta]:
        """Metadata of the live entries, by hit count (replication priority) or LRU order."""
        now = self._now_ms()
        with self._lock:
            metas = [s.meta() for s in self._slots.values() if now < s.expires_unix_ms]
        if hottest_first:
            metas.sort(key=lambda m: (m.critical, m.hits), reverse=True)
        return metas if limit is None else metas[:limit]

    # -- writes ---------------------------------------------------------------------------------

    def _check_size(self, what: str, size: int, limit: int | None = None, setting: str = "cache_max_value_bytes"
                    ) -> None:
        limit = self.max_value_bytes if limit is None else limit
        if size > limit:
            raise ValueTooLarge(
                f"{what} is {size} bytes; this node's cache takes at most {limit} bytes per entry ({setting})"
            )

    def _check_request(self, prompt: str, model: str) -> None:
        """Per-field limits that need no hashing, checked first: an oversize request costs nothing."""
        if not model:
            raise InvalidCacheRequest("model is empty: name the model the response is for")
        if len(model.encode("utf-8")) > MAX_MODEL_BYTES:
            raise InvalidCacheRequest(f"the model name is longer than {MAX_MODEL_BYTES} bytes")
        if len(prompt) > self.max_prompt_bytes:  # each character is at least one UTF-8 byte
            self._check_size("the prompt", len(prompt), self.max_prompt_bytes, "cache_max_prompt_bytes")
        self._check_size("the prompt", len(prompt.encode("utf-8")), self.max_prompt_bytes, "cache_max_prompt_bytes")

    def _cost(self, key: str, prompt: str, model: str, params: dict[str, Any], response: str,
              extras: EntryExtras | None) -> int:
        """``stored_bytes`` of the entry after the params limit; ValueTooLarge beyond the whole budget."""
        self._check_size("the params (tools_json, system_prompt, stop)", params_bytes(params),
                         self.max_params_bytes, "cache_max_params_bytes")
        cost = stored_bytes(key, prompt, model, params, response) + (extras.stored_bytes() if extras else 0)
        if extras is not None and extras.embedding and self.index is not None:
            cost += self.index.row_cost(extras.embedding)  # the vector's row in the semantic index
        self._check_size("the entry with its prompt, params and metadata", cost, self.max_bytes, "cache_max_bytes")
        return cost

    def _ttl_ms(self, ttl: float | None, namespace: str = "") -> int:
        """The TTL in ms: the namespace's or the default for ``None``, at most ``max_ttl_s`` (capped)."""
        if ttl is None:
            return int(min(self.namespace_ttl_s.get(namespace, self.ttl_s), self.max_ttl_s) * 1000)
        if not ttl > 0:
            raise InvalidCacheRequest(f"ttl must be positive seconds, not {ttl}")
        return max(1, int(min(ttl, self.max_ttl_s) * 1000))

    def put(
        self,
        prompt: str,
        model: str,
        response: str,
        params: Params = None,
        ttl: float | None = None,
        critical: bool = False,
        extras: EntryExtras | None = None,
    ) -> CacheEntry:
        """Store ``response`` for this call (replacing any entry of the same key) and return it.

        ``ttl`` in seconds (default: the namespace's, else the cache's ``ttl_s``). ``extras``
        carry the namespace (part of the key), the writer, the generation's usage and the
        semantic cache's fields. Raises ``ValueTooLarge`` over the per-entry limit,
        ``InvalidCacheRequest`` for an empty model or a bad ttl, ``InvalidParams`` for
        unusable parameters or namespace and ``StoreUnavailable`` when the store fails.
        """
        if not isinstance(response, str):
            raise InvalidCacheRequest(f"a cached response must be a string, not {type(response).__name__}")
        return self._put(prompt, model, response, params, ttl, critical, obj=None, extras=extras)

    def put_ref(
        self,
        prompt: str,
        model: str,
        ref: Any,
        params: Params = None,
        ttl: float | None = None,
        critical: bool = False,
        extras: EntryExtras | None = None,
    ) -> CacheEntry:
        """Like ``put`` with a Ray ``ObjectRef`` holding the response, made by any task or actor.

        The store takes its own copy (see ``stores/ray_store.py``), so the entry survives the
        death of the worker that made ``ref``.
        """
        return self._put(prompt, model, None, params, ttl, critical, obj=ref, extras=extras)

    def _put(
        self, prompt: str, model: str, response: str | None, params: Params, ttl: float | None,
        critical: bool, obj: Any, extras: EntryExtras | None = None,
    ) -> CacheEntry:
        self._check_request(prompt, model)
        namespace = check_namespace(extras.namespace) if extras is not None else ""
        ttl_ms = self._ttl_ms(ttl, namespace)
        if response is not None and len(response) > self.max_value_bytes:
            self._check_size("the response", len(response))
        norm = normalize_params(params)
        key = cache_key(prompt, model, norm, namespace)
        extras = None if extras == _NO_EXTRAS else extras
        if obj is None:
            assert response is not None
            size = len(response.encode("utf-8"))
            self._check_size("the response", size)
            cost = self._cost(key, prompt, model, norm, response, extras)
            handle = self.store.put(response)
        else:
            response, handle = self.store.adopt(obj)
            size = len(response.encode("utf-8"))
            try:
                self._check_size("the response", size)
                cost = self._cost(key, prompt, model, norm, response, extras)
            except ValueTooLarge:
                self.store.release(handle)
                raise
        now = self._now_ms()
        slot = _Slot(
            key=key, prompt=prompt, model=model, params=norm, created_unix_ms=now, expires_unix_ms=now + ttl_ms,
            size_bytes=size, checksum=checksum(response), critical=critical, primary_node_id=self.node_id,
            handle=handle, extras=extras, stored_bytes=cost,
        )
        entry = self._insert(slot, response, keep_hits=True)
        self._notify_put(entry)
        return entry

    def put_entry(self, entry: CacheEntry | common_pb2.CacheEntry, *, notify: bool = False) -> CacheEntry | None:
        """Store a whole entry as it is (replication: a replica copy, a sync, a repair).

        The key must be the key of its prompt, model and params, and the checksum that of
        its response (``CorruptEntry`` otherwise), and it obeys the same limits as a put.
        Creation and expiry times, hit count, ``critical`` and ``primary_node_id`` are kept,
        except that no time is believed beyond this node's clock: creation is at most now
        and expiry at most now + ``max_ttl_s``. An entry that has already expired is
        not stored (returns ``None``): sync never resurrects one. Listeners hear about it
        only with ``notify=True``, so a replica write does not replicate itself again.
        """
        self._check_request(entry.prompt, entry.model)  # before from_proto parses the params
        if isinstance(entry, common_pb2.CacheEntry):
            entry = CacheEntry.from_proto(entry)
        if len(entry.response) > self.max_value_bytes:
            self._check_size("the response", len(entry.response))
        norm = normalize_params(entry.params)
        expected = cache_key(entry.prompt, entry.model, norm, entry.namespace)
        if entry.key != expected:
            raise CorruptEntry(f"entry key {entry.key[:12]}… does not match its prompt, model and params")
        if entry.checksum != checksum(entry.response):
            raise CorruptEntry(f"entry {entry.key[:12]}…: response checksum mismatch")
        size = len(entry.response.encode("utf-8"))
        self._check_size("the response", size)
        extras = EntryExtras.of(entry)
        cost = self._cost(entry.key, entry.prompt, entry.model, norm, entry.response, extras)
        now = self._now_ms()
        if entry.expired(now):
            return None
        handle = self.store.put(entry.response)
        slot = _Slot(
            key=entry.key, prompt=entry.prompt, model=entry.model, params=norm,
            created_unix_ms=min(entry.created_unix_ms, now),
            expires_unix_ms=min(entry.expires_unix_ms, now + int(self.max_ttl_s * 1000)), size_bytes=size,
            checksum=entry.checksum, critical=entry.critical, primary_node_id=entry.primary_node_id,
            handle=handle, hits=max(0, entry.hits), extras=extras, stored_bytes=cost,
        )
        stored = self._insert(slot, entry.response, keep_hits=False)
        if notify:
            self._notify_put(stored)
        return stored

    def _insert(self, slot: _Slot, response: str, keep_hits: bool) -> CacheEntry:
        now = self._now_ms()
        removed: list[tuple[_Slot, str]] = []
        with self._lock:
            old = self._slots.get(slot.key)
            if old is not None:
                if keep_hits:
                    slot.hits = old.hits  # a refreshed entry stays as hot as it was
                self._remove(slot.key)
                removed.append((old, "replaced"))
            slot.seq = next(self._seq)
            self._slots[slot.key] = slot
            self._bytes += slot.stored_bytes
            slot.figures = self._by_namespace.stored(_namespace(slot), slot.stored_bytes)
            if self._is_replica(slot):
                self._replicas += 1
            heapq.heappush(self._expiry, (slot.expires_unix_ms, slot.seq, slot.key))
            self._counters["puts"] += 1
            self._by_namespace.count(_namespace(slot), "puts")
            self._drop_wires()
            if self._over_budget():
                removed.extend(self._expire_locked(now))
            while self._over_budget() and len(self._slots) > 1:
                victim = next(iter(self._slots))
                removed.append((self._remove(victim), "evicted"))
                self._counters["evictions"] += 1
                self._by_namespace.count(_namespace(removed[-1][0]), "evictions")
            entry = slot.entry(response)
        # A replaced value is released but not announced: the key is still in the cache.
        for old_slot, reason in removed:
            if reason == "replaced":
                self.store.release(old_slot.handle)
        if self.index is not None:
            if slot.extras is not None and slot.extras.embedding:
                if slot.key in self._slots:  # (not evicted at once by its own put)
                    self.index.add(entry)
            elif any(r == "replaced" for _, r in removed):
                self.index.remove(slot.key)
        self._notify_removed([(s, r) for s, r in removed if r != "replaced"])
        return entry

    def delete(self, key: str, reason: str = "deleted") -> bool:
        """Remove ``key``; True when there was a live entry.

        ``reason`` is what listeners hear: ``deleted`` (a delete to spread, the default) or
        ``handed_off`` (replication moved a stand-in's copy home: nothing to spread).
        """
        now = self._now_ms()
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                return False
            self._remove(key)
            live = now < slot.expires_unix_ms
            if not live:
                self._counters["expirations"] += 1
                self._by_namespace.count(_namespace(slot), "expirations")
        self._notify_removed([(slot, reason if live else "expired")])
        return live

    def delete_lookup(self, prompt: str, model: str, params: Params = None, namespace: str = "") -> bool:
        """``delete`` by what the key is made from."""
        return self.delete(cache_key(prompt, model, params, namespace))

    def clear(self) -> int:
        """Remove every entry; returns how many there were. Counters are kept."""
        with self._lock:
            slots = list(self._slots.values())
            self._slots.clear()
            self._expiry.clear()
            self._bytes = 0
            for slot in self._wired.values():
                slot.wire = None
            self._wired.clear()
            self._wire_bytes = 0
            self._replicas = 0
            self._by_namespace.emptied()
        if self.index is not None:
            self.index.clear()
        self._notify_removed([(s, "cleared") for s in slots])
        return len(slots)

    def sweep(self) -> int:
        """Reclaim every expired entry now; returns how many. Cheap: walks the expiry heap only."""
        now = self._now_ms()
        with self._lock:
            removed = self._expire_locked(now)
        self._notify_removed(removed)
        return len(removed)

    # -- internals (lock held) ------------------------------------------------------------------

    def _is_replica(self, slot: _Slot) -> bool:
        return bool(slot.primary_node_id) and slot.primary_node_id != self.node_id

    def _over_budget(self) -> bool:
        return self._bytes > self.max_bytes or len(self._slots) > self.max_entries

    def _drop_wires(self) -> None:
        """Drop the oldest serialized entries until entries and memos fit ``max_bytes`` together."""
        while self._wired and self._bytes + self._wire_bytes > self.max_bytes:
            self._forget_wire(next(iter(self._wired.values())))

    def _forget_wire(self, slot: _Slot) -> None:
        if slot.wire is not None:
            self._wire_bytes -= _wire_cost(slot.wire)
            slot.wire = None
            del self._wired[slot.key]

    def _remove(self, key: str) -> _Slot:
        slot = self._slots.pop(key)
        self._forget_wire(slot)
        self._bytes -= slot.stored_bytes
        self._by_namespace.removed(_namespace(slot), slot.stored_bytes)
        if self._is_replica(slot):
            self._replicas -= 1
        return slot

    def _expire_locked(self, now: int) -> list[tuple[_Slot, str]]:
        removed = []
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, seq, key = heapq.heappop(heap)
            slot = self._slots.get(key)
            if slot is not None and slot.seq == seq:  # else a stale heap item of a replaced/removed entry
                removed.append((self._remove(key), "expired"))
                self._counters["expirations"] += 1
                self._by_namespace.count(_namespace(slot), "expirations")
        if len(heap) > 2 * len(self._slots) + 64:  # stale items pile up under churn: rebuild
            self._expiry = [(s.expires_unix_ms, s.seq, s.key) for s in self._slots.values()]
            heapq.heapify(self._expiry)
        return removed

    # -- statistics -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slots)

    def get_stats(self) -> dict[str, Any]:
        """Counters and sizes: hits, misses, hit_ratio, puts, evictions, expirations, lost,
        entries, bytes (every stored byte, see ``entry.stored_bytes``), wire_bytes (serialized
        entries kept for hits, ``aget_wire``; bytes + wire_bytes stay within max_bytes), max_bytes,
        max_entries, max_value_bytes, max_prompt_bytes, max_params_bytes, ttl_s, max_ttl_s, store,
        replica_entries, replication_shortfall."""
        with self._lock:
            counters = dict(self._counters)
            entries, size, replicas, wire = len(self._slots), self._bytes, self._replicas, self._wire_bytes
        lookups = counters["hits"] + counters["misses"]
        try:
            shortfall = int(self.peer_source.shortfall()) if self.peer_source is not None else 0
        except Exception:
            log.exception("the peer source's shortfall failed")
            shortfall = 0
        return {
            **counters,
            **self.store.stats(),
            "hit_ratio": counters["hits"] / lookups if lookups else 0.0,
            "entries": entries,
            "bytes": size,
            "wire_bytes": wire,
            "max_bytes": self.max_bytes,
            "max_entries": self.max_entries,
            "max_value_bytes": self.max_value_bytes,
            "max_prompt_bytes": self.max_prompt_bytes,
            "max_params_bytes": self.max_params_bytes,
            "ttl_s": self.ttl_s,
            "max_ttl_s": self.max_ttl_s,
            "store": self.store.name,
            "replica_entries": replicas,
            "replication_shortfall": shortfall,
        }

    def stats_by_namespace(self) -> dict[str, dict[str, Any]]:
        """``{namespace: {hits, misses, puts, evictions, expirations, lost, entries, bytes}}`` for the
        metrics exporter (``metrics/collectors.py``); bounded (``namespace_stats.py``)."""
        with self._lock:
            rows = self._by_namespace.snapshot()
        return rows

    def stats_proto(self) -> common_pb2.CacheStatistics:
        """The statistics as sent in heartbeats, ``Node.GetInfo`` and ``Cache.Stats``."""
        stats = self.get_stats()
        fields = common_pb2.CacheStatistics.DESCRIPTOR.fields_by_name
        return common_pb2.CacheStatistics(**{k: v for k, v in stats.items() if k in fields})

    def close(self) -> None:
        """Drop every entry and release the store (node shutdown)."""
        self.clear()
        self.store.close()
