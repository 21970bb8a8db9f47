"""The tools one node can run: registered at run time, found by name or capability, counted.

Tools come from three places, all ending in ``ToolRegistry.add``:

* built-ins (``calculator``, ``web_search``, ``browser``), chosen with ``--tools``;
* entry points of the group ``llmlab.tools`` in any installed distribution, each naming
  a ``Tool`` subclass (``[project.entry-points."llmlab.tools"] mytool = "pkg.mod:MyTool"``);
* modules named in ``--tool-plugin`` / ``LLMLAB_TOOL_PLUGINS`` (``pkg.mod:MyTool``, or
  ``pkg.mod`` for every Tool subclass defined there), for tools that are not packaged.

A class is instantiated with ``cls.from_settings(node_settings)`` when it defines that
classmethod, else with no arguments. A plugin that fails to import, build or start is
logged and left out: one bad plugin never keeps a node from serving the others.

Listeners hear every change, which is how the tools component keeps ``node.tools`` (and
so the heartbeats that tell peers what this node can do) in step with the registry.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import re
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from llmlab_grpc.proto.llmlab.v1 import common_pb2
from llmlab_grpc.tools.base import InvalidArguments, Tool, ToolFailure, ToolOutcome
from llmlab_grpc.tools.convert import to_struct

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "llmlab.tools"
BUILTIN_TOOLS: dict[str, str] = {
    "calculator": "llmlab_grpc.tools.builtin.calculator:CalculatorTool",
    "web_search": "llmlab_grpc.tools.builtin.web_search:WebSearchTool",
    "browser": "llmlab_grpc.tools.builtin.browser:BrowserTool",
}
"""Built-in tool name → class, imported only when enabled."""
STATS_WINDOW = 1024
"""The p50 latency is the median of this many most recent executions."""
START_TIMEOUT_S = 60.0
"""Longest a tool's ``start()`` may take before the tool is left out."""
NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
"""Tool names: lower case, start with a letter, at most 64 characters."""

Listener = Callable[[], None]


class ToolNotFound(ToolFailure):
    """No node (or not this node) has the tool (gRPC: NOT_FOUND)."""

    def __init__(self, message: str) -> None:
        super().__init__("NOT_FOUND", message)


@dataclass
class ToolStats:
    """Usage counters of one tool on this node."""

    calls: int = 0
    errors: int = 0
    total_ms: float = 0.0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=STATS_WINDOW))

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.recent) if self.recent else 0.0

    def record(self, duration_ms: float, ok: bool) -> None:
        self.calls += 1
        self.errors += 0 if ok else 1
        self.total_ms += duration_ms
        self.recent.append(duration_ms)

    def to_proto(self, node_id: str) -> common_pb2.ToolUsage:
        return common_pb2.ToolUsage(node_id=node_id, calls=self.calls, errors=self.errors,
                                    total_ms=self.total_ms, p50_ms=self.p50_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "errors": self.errors, "total_ms": round(self.total_ms, 3),
                "p50_ms": round(self.p50_ms, 3)}


class ToolRegistry:
    """Name → Tool for one node, with usage statistics and change listeners."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._stats: dict[str, ToolStats] = {}
        self._listeners: list[Listener] = []

    # -- membership -------------------------------------------------------------------------

    def register(self, tool: Tool, *, replace: bool = False) -> Tool:
        """Make ``tool`` callable by name. Raises ValueError for a bad or taken name."""
        if not isinstance(tool, Tool):
            raise TypeError(f"{tool!r} is not a Tool instance")
        name = getattr(tool, "name", "")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ValueError(f"tool name {name!r} must match {NAME_RE.pattern}")
        if name in self._tools and not replace:
            raise ValueError(f"a tool named {name!r} is already registered")
        self._tools[name] = tool
        self._stats.setdefault(name, ToolStats())
        self._changed()
        return tool

    def unregister(self, name: str) -> Tool | None:
        """Forget a tool (its statistics stay); returns it, or None when it was not there."""
        tool = self._tools.pop(name, None)
        if tool is not None:
            self._changed()
        return tool

    async def add(self, tool: Tool, *, replace: bool = False) -> Tool:
        """``start()`` the tool (bounded), then register it; a start failure is raised."""
        if tool.name in self._tools and not replace:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        await asyncio.wait_for(tool.start(), timeout=START_TIMEOUT_S)
        old = self._tools.get(tool.name)
        self.register(tool, replace=replace)
        if old is not None and old is not tool:
            await _close_quietly(old)
        return tool

    async def remove(self, name: str) -> bool:
        """Unregister and ``close()`` a tool."""
        tool = self.unregister(name)
        if tool is None:
            return False
        await _close_quietly(tool)
        return True

    async def close_all(self) -> None:
        for name in list(self._tools):
            await self.remove(name)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener()`` after every register/unregister; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("tool registry listener failed")

    # -- queries ----------------------------------------------------------------------------

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def tools(self) -> list[Tool]:
        return [self._tools[n] for n in self.names()]

    def with_capability(self, capability: str) -> list[Tool]:
        return [t for t in self.tools() if capability in t.capabilities]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self.tools())

    # -- statistics and specs ----------------------------------------------------------------

    def stats(self, name: str) -> ToolStats:
        return self._stats.setdefault(name, ToolStats())

    def all_stats(self) -> dict[str, dict[str, Any]]:
        """name → counters, for status pages and logs."""
        return {name: stats.to_dict() for name, stats in sorted(self._stats.items())}

    def spec(self, name: str, node_id: str = "", node_name: str = "") -> common_pb2.ToolSpec:
        """The published description of one registered tool."""
        tool = self._tools[name]
        spec = common_pb2.ToolSpec(
            name=tool.name,
            description=tool.description,
            capabilities=list(tool.capabilities),
            input_schema=to_struct(tool.input_schema()),
            output_schema=to_struct(tool.output_schema()),
            timeout_ms=int(tool.timeout_s * 1000),
        )
        if node_id:
            spec.node_ids.append(node_id)
            spec.node_names.append(node_name or node_id)
            spec.usage.append(self.stats(name).to_proto(node_id))
        return spec

    def specs(self, capability: str = "", node_id: str = "", node_name: str = "") -> list[common_pb2.ToolSpec]:
        tools = self.with_capability(capability) if capability else self.tools()
        return [self.spec(t.name, node_id, node_name) for t in tools]

    # -- execution ----------------------------------------------------------------------------

    async def run(self, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        """Run a registered tool here. Raises ToolNotFound or InvalidArguments; else an outcome."""
        tool = self._tools.get(name)
        if tool is None:
            raise ToolNotFound(f"no tool named {name!r} on this node; it has: {', '.join(self.names()) or 'none'}")
        started = time.perf_counter()
        try:
            outcome = await tool.run(arguments)
        except InvalidArguments:
            self.stats(name).record((time.perf_counter() - started) * 1000, ok=False)
            raise
        self.stats(name).record(outcome.duration_ms, ok=outcome.ok)
        return outcome


async def _close_quietly(tool: Tool) -> None:
    try:
        await asyncio.wait_for(tool.close(), timeout=START_TIMEOUT_S)
    except Exception:
        log.exception("closing tool %s failed", tool.name)


# -- loading --------------------------------------------------------------------------------------


def instantiate(target: Any, settings: Any = None) -> Tool:
    """A Tool from a Tool subclass (``from_settings(settings)`` when it has one) or a Tool instance."""
    if isinstance(target, Tool):
        return target
    if not (inspect.isclass(target) and issubclass(target, Tool)):
        raise TypeError(f"{target!r} is not a Tool subclass")
    if inspect.isabstract(target):
        raise TypeError(f"{target.__name__} is abstract (does it implement execute?)")
    factory = getattr(target, "from_settings", None)
    tool = factory(settings) if callable(factory) and settings is not None else target()
    if not isinstance(tool, Tool):
        raise TypeError(f"{target.__name__}.from_settings did not return a Tool")
    return tool


def _import(target: str) -> Any:
    module, _, attr = target.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attr) if attr else loaded


def builtin_tools(names: Iterable[str], settings: Any = None) -> list[Tool]:
    """Instances of the enabled built-ins. A built-in whose module is absent is skipped."""
    tools = []
    for name in names:
        target = BUILTIN_TOOLS.get(name)
        if target is None:
            log.error("unknown built-in tool %r; built-ins are %s", name, ", ".join(BUILTIN_TOOLS))
            continue
        module = target.partition(":")[0]
        try:
            tools.append(instantiate(_import(target), settings))
        except ModuleNotFoundError as exc:
            if exc.name != module:
                log.warning("built-in tool %s cannot load: %s", name, exc)
            else:
                log.info("built-in tool %s is not available in this version", name)
        except Exception as exc:
            log.warning("built-in tool %s cannot load: %s: %s", name, type(exc).__name__, exc)
    return tools


def entry_point_tools(settings: Any = None, group: str = ENTRY_POINT_GROUP) -> list[Tool]:
    """Instances of the Tool classes installed distributions declare in the ``llmlab.tools`` group."""
    tools = []
    for ep in entry_points(group=group):
        try:
            tools.append(instantiate(ep.load(), settings))
        except Exception as exc:
            log.warning("tool plugin %s (%s) cannot load: %s: %s", ep.name, ep.value, type(exc).__name__, exc)
    return tools


def module_tools(targets: Iterable[str], settings: Any = None) -> list[Tool]:
    """Instances from ``module:Class`` targets, or every concrete Tool subclass a ``module`` defines."""
    tools: list[Tool] = []
    for target in targets:
        try:
            loaded = _import(target)
            if inspect.ismodule(loaded):
                classes = [obj for obj in vars(loaded).values()
                           if inspect.isclass(obj) and issubclass(obj, Tool) and obj.__module__ == loaded.__name__
                           and not inspect.isabstract(obj)]
                if not classes:
                    raise TypeError(f"module {target} defines no Tool subclass")
                tools.extend(instantiate(cls, settings) for cls in classes)
            else:
                tools.append(instantiate(loaded, settings))
        except Exception as exc:
            log.error("tool plugin %s cannot load: %s: %s", target, type(exc).__name__, exc)
    return tools
