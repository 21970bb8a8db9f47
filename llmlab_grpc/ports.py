"""The small typed views of a node that its components receive instead of the node itself.

A component is given what it uses and nothing else, so what it can read and write is
visible in its constructor, it can be tested with a fake of just that, and two components
cannot fight over one value: each load counter and the cache statistics have exactly one
writer, picked when the node is assembled (``llmlab_grpc/assembly.py``). The peer table
(``mesh/peers.py``) and the channel pool (``mesh/channels.py``) fit the protocols here as
they are; the rest are small classes of their own.

Nothing here imports a component: the ports are the vocabulary both sides share.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import grpc

from llmlab_grpc.proto.llmlab.v1 import cache_pb2, common_pb2, planner_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from llmlab_grpc.cache.entry import CachedAnswer, CacheEntry, EntryMeta
    from llmlab_grpc.cache.hooks import CacheListener
    from llmlab_grpc.mesh.peers import PeerRecord
    from llmlab_grpc.planner.hit_wire import WrittenHit
    from llmlab_grpc.tools.base import ToolOutcome


# -- this node --------------------------------------------------------------------------------

@dataclass
class LocalNode:
    """What this node is and announces (``NodeInfo``), shared by the node and its components.

    Fixed at construction: ``node_id``, ``name``, ``roles``, ``mesh_id``, ``started_unix_ms``.
    Each changing field has one writer: ``address``/``addresses`` the node (when bound),
    ``http_url`` the bridge role, ``models`` the llm role, ``tools`` the tools role.
    """

    node_id: str
    name: str
    roles: list[str]
    mesh_id: str
    started_unix_ms: int
    address: str = ""
    addresses: list[str] = field(default_factory=list)
    """Every address announced, best first; ``address`` is the first."""
    http_url: str = ""
    models: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)


# -- the mesh ---------------------------------------------------------------------------------

class PeersView(Protocol):
    """The peer table, read only (``PeerTable`` fits): the live, routable peers."""

    def get(self, node_id: str) -> PeerRecord | None: ...

    def all(self) -> list[PeerRecord]: ...

    def with_role(self, role: str) -> list[PeerRecord]: ...

    def with_tool(self, tool: str) -> list[PeerRecord]: ...

    def to_protos(self) -> list[common_pb2.Peer]: ...

    def __contains__(self, node_id: object) -> bool: ...


class MobileRows(PeersView, Protocol):
    """What the bridge's hub may also write: the rows of the phones paired with it."""

    def upsert(self, info: common_pb2.NodeInfo, source: str, load: common_pb2.NodeLoad | None = None,
               cache_stats: common_pb2.CacheStatistics | None = None, address: str | None = None
               ) -> PeerRecord | None: ...

    def remove(self, node_id: str) -> PeerRecord | None: ...


PeerListener = Callable[[str, "PeerRecord"], None]
"""``(event, record)``: ``"joined"`` or ``"left"``."""


class PeerEvents(Protocol):
    """Joins and leaves of the peer table (``PeerTable.subscribe`` fits)."""

    def subscribe(self, listener: PeerListener) -> None: ...


class WatchedPeers(PeersView, PeerEvents, Protocol):
    """The read-only peer table plus its joins and leaves (the tools role forgets a peer's listing)."""


class Channels(Protocol):
    """The node's pool of authenticated channels, one per address (``ChannelPool`` fits)."""

    def get(self, address: str) -> grpc.aio.Channel: ...


class ModelMemory(Protocol):
    """Models once served in this mesh (``mesh/known_models.KnownModels`` fits)."""

    def names(self) -> list[str]: ...

    @property
    def default(self) -> str: ...

    def __contains__(self, model: object) -> bool: ...


# -- load: one writer per counter -------------------------------------------------------------

PLANNER_TASKS = "planner_tasks"
"""Asks the planner role is running (writer: ``planner/planner.py``)."""
TOOL_CALLS = "tool_calls"
"""``ToolExecutor.Execute`` calls being served (writer: ``tools/service.py``)."""
TOOLS_RUNNING = "tools_running"
"""Tools running on this node itself (writer: ``tools/router.py``)."""
GENERATIONS_RUNNING = "generations_running"
"""Generations running or queued here (writer: ``inference/role.py``)."""
TOKENS_PER_SECOND = "tokens_per_second"
"""Smoothed decoding speed of this node's models (writer: ``inference/role.py``)."""
COUNTERS = (PLANNER_TASKS, TOOL_CALLS, TOOLS_RUNNING, GENERATIONS_RUNNING, TOKENS_PER_SECOND)


class Gauge:
    """One load counter, held by the one component that writes it."""

    __slots__ = ("name", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value: float = 0

    def add(self, delta: float) -> None:
        self.value += delta

    def set(self, value: float) -> None:
        self.value = value

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """One more for the length of the ``with`` block, whatever ends it."""
        self.value += 1
        try:
            yield
        finally:
            self.value -= 1


class LoadView(Protocol):
    """This node's load as heartbeats carry it (``LoadMeter`` fits)."""

    def proto(self) -> common_pb2.NodeLoad: ...


class LoadMeter:
    """The node's load counters; each is handed out once (``claim``), so it has one writer.

    ``NodeLoad.in_flight`` is composed when read: planner tasks plus tool calls served,
    each counted by its own component.
    """

    def __init__(self) -> None:
        self._gauges = {name: Gauge(name) for name in COUNTERS}
        self._claimed: set[str] = set()

    def claim(self, name: str) -> Gauge:
        """The counter ``name`` for its writer; a second claim is a wiring bug and raises."""
        if name in self._claimed:
            raise RuntimeError(f"load counter {name!r} already has a writer")
        gauge = self._gauges[name]  # KeyError: not a counter of COUNTERS
        self._claimed.add(name)
        return gauge

    def value(self, name: str) -> float:
        return self._gauges[name].value

    def proto(self) -> common_pb2.NodeLoad:
        g = self._gauges
        return common_pb2.NodeLoad(
            in_flight=int(g[PLANNER_TASKS].value + g[TOOL_CALLS].value),
            tools_running=int(g[TOOLS_RUNNING].value),
            generations_running=int(g[GENERATIONS_RUNNING].value),
            tokens_per_second=g[TOKENS_PER_SECOND].value,
        )


# -- cache ------------------------------------------------------------------------------------

CacheStatsSource = Callable[[], "common_pb2.CacheStatistics | None"]


class CacheStatsSlot:
    """Where heartbeats read this node's cache statistics; filled once, by one owner."""

    def __init__(self) -> None:
        self._source: CacheStatsSource | None = None
        self.owner = ""

    def provide(self, owner: str, source: CacheStatsSource) -> None:
        if self._source is not None:
            raise RuntimeError(f"the cache statistics already come from {self.owner}; {owner} cannot provide them")
        self._source, self.owner = source, owner

    def __call__(self) -> common_pb2.CacheStatistics | None:
        return self._source() if self._source is not None else None


class PlannerCache(Protocol):
    """This node's own cache, read and written in-process by its planner (``CacheService`` fits)."""

    async def lookup(self, key: str, read_through: bool = False, max_age_s: float | None = None,
                     namespace: str = "") -> cache_pb2.GetResponse: ...

    async def lookup_answer(self, key: str, read_through: bool = False, max_age_s: float | None = None,
                            namespace: str = "") -> CachedAnswer | None: ...

    async def semantic_lookup(self, lookup: cache_pb2.CacheLookup, min_similarity: float = 0.0,
                              max_age_s: float | None = None, candidates: int = 0) -> cache_pb2.GetResponse: ...

    async def store(self, lookup: cache_pb2.CacheLookup, response: str, *, ttl_s: float | None = None,
                    critical: bool = False, semantic: bool = False, writer: str = "",
                    usage: common_pb2.CachedUsage | None = None) -> CacheEntry: ...

    async def copies_of(self, entry: CacheEntry, timeout_s: float = ...) -> tuple[int, int, int]: ...


class CacheEvents(Protocol):
    """Changes of this node's cache and a hottest-first snapshot, for the bridge's phones
    (``CacheManager`` fits). Listeners are called on the thread that made the change."""

    def add_listener(self, listener: CacheListener) -> None: ...

    def describe(self, hottest_first: bool = True, limit: int | None = None) -> list[EntryMeta]: ...

    def get_entry(self, key: str) -> CacheEntry | None: ...


# -- roles reaching each other in-process -----------------------------------------------------

class MobileTools(Protocol):
    """The phones paired with this node's bridge, as the tools role reaches them."""

    async def execute_on_mobile(self, node_id: str, tool: str, arguments: dict[str, Any],
                                timeout_s: float) -> ToolOutcome: ...

    def mobile_tool_specs(self) -> list[common_pb2.ToolSpec]: ...


class LocalPlanner(Protocol):
    """This node's planner, as the OpenAI API calls it in-process (``planner.Planner`` fits)."""

    async def ask(self, query: planner_pb2.Query, emit: Any = None
                  ) -> tuple[planner_pb2.Task, grpc.StatusCode | None]: ...

    async def ask_written(self, query: planner_pb2.Query, request: bytes | None = None
                          ) -> tuple[planner_pb2.Task | WrittenHit, grpc.StatusCode | None]:
        """``ask`` with nobody listening; an exact cache hit may come as ``planner.hit_wire.WrittenHit``."""
        ...

    def stream(self, query: planner_pb2.Query) -> AsyncGenerator[planner_pb2.AskStreamResponse, None]: ...


T = TypeVar("T")


class Slot(Generic[T]):
    """A port filled after it is handed out (a role built later, or a test's stand-in); empty is None."""

    __slots__ = ("value",)

    def __init__(self, value: T | None = None) -> None:
        self.value = value

    def get(self) -> T | None:
        return self.value

    def set(self, value: T | None) -> None:
        self.value = value
