"""Node assembly: each role's component, built from the ports of the node it runs in.

This is the one place that knows both the node and the components: a component gets
the ports it uses (``llmlab_grpc/ports.py``) and nothing else, and a role that reaches
another in-process (the planner this node's cache, the bridge this node's planner and
cache, the tools role this node's bridge) is handed that role here. Components are built
in ``BUILD_ORDER`` so each finds what it needs already built, then listed (and started)
in the order of ``settings.roles``. Each load counter is claimed by the one component
that writes it, and the cache statistics come from one owner.

Component modules are imported by the builder of their role only, so a node without the
``bridge`` role never imports Starlette, one without ``llm`` never imports the backends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmlab_grpc.ports import (
    GENERATIONS_RUNNING,
    PLANNER_TASKS,
    TOKENS_PER_SECOND,
    TOOL_CALLS,
    TOOLS_RUNNING,
    PlannerCache,
    Slot,
)
from llmlab_grpc.roles import RoleComponent

if TYPE_CHECKING:
    from llmlab_grpc.bridge.component import BridgeComponent
    from llmlab_grpc.cache.component import CacheComponent
    from llmlab_grpc.node import LlmlabNode
    from llmlab_grpc.planner.mesh_calls import MeshCalls
    from llmlab_grpc.planner.service import PlannerComponent


@dataclass
class Built:
    """The components built so far: by role, and typed where other roles are handed them."""

    by_role: dict[str, RoleComponent] = field(default_factory=dict)
    cache: CacheComponent | None = None
    planner: PlannerComponent | None = None
    bridge: BridgeComponent | None = None


Builder = Callable[["LlmlabNode", Built], RoleComponent]

BUILD_ORDER = ("cache", "replica", "llm", "planner", "bridge", "tools")
"""Cache before the roles that read it; the planner before the bridge (``/v1``); the bridge
before the tools role (phones' tools)."""


def mesh_calls(node: LlmlabNode, local_cache: PlannerCache | None) -> MeshCalls:
    """The planner's (or the ``/v1`` gateway's) way to the mesh, from the node's ports."""
    from llmlab_grpc.planner.mesh_calls import MeshCalls

    return MeshCalls(node.me, node.peers, node.channels, node.load_meter, node.known_models,
                     node.settings.first_token_timeout_s, node.settings.heartbeat_interval_s, local_cache)


def _cache(node: LlmlabNode, built: Built) -> RoleComponent:
    from llmlab_grpc.cache.component import CacheComponent

    component = built.cache = CacheComponent(node.settings, node.node_id, node.metrics)
    node.cache_stats.provide("the cache role", component.manager.stats_proto)
    return component


def _replica(node: LlmlabNode, built: Built) -> RoleComponent:
    from llmlab_grpc.replication.component import ReplicaComponent

    component = ReplicaComponent(node.settings, node.me, node.peers, node.channels, node.metrics,
                                 built.cache.manager if built.cache is not None else None)
    if component.own_cache is not None:  # no cache role: the copies this role keeps are the node's cache
        node.cache_stats.provide("the replica role", component.own_cache.stats_proto)
    return component


def _llm(node: LlmlabNode, built: Built) -> RoleComponent:
    from llmlab_grpc.inference.role import LlmComponent

    meter = node.load_meter
    return LlmComponent(node.settings, node.me, node.metrics, meter.claim(GENERATIONS_RUNNING),
                        meter.claim(TOKENS_PER_SECOND))


def _local_cache(built: Built) -> PlannerCache | None:
    return built.cache.service if built.cache is not None else None


def _planner(node: LlmlabNode, built: Built) -> RoleComponent:
    from llmlab_grpc.planner.planner import Planner
    from llmlab_grpc.planner.service import PlannerComponent

    planner = Planner(mesh_calls(node, _local_cache(built)), node.settings, node.load_meter.claim(PLANNER_TASKS))
    built.planner = PlannerComponent(planner)
    return built.planner


def _bridge(node: LlmlabNode, built: Built) -> RoleComponent:
    from llmlab_grpc.bridge.component import BridgeComponent, BridgePorts

    cache, planner = built.cache, built.planner
    built.bridge = BridgeComponent(BridgePorts(
        settings=node.settings, me=node.me, peers=node.peers, channels=node.channels, info=node.info,
        load=node.load_meter, cache_stats=node.cache_stats, metrics=node.metrics.exposition,
        calls=mesh_calls(node, None),  # /v1 lists models and reaches planners; it reads no cache itself
        planner=planner.planner if planner is not None else None,
        cache_events=cache.manager if cache is not None else None,
    ))
    return built.bridge


def _tools(node: LlmlabNode, built: Built) -> RoleComponent:
    from llmlab_grpc.tools.component import ToolsComponent

    meter = node.load_meter
    return ToolsComponent(node.settings, node.me, node.peers, node.channels, Slot(built.bridge),
                          meter.claim(TOOLS_RUNNING), meter.claim(TOOL_CALLS))


BUILDERS: dict[str, Builder] = {
    "cache": _cache,
    "replica": _replica,
    "llm": _llm,
    "planner": _planner,
    "bridge": _bridge,
    "tools": _tools,
}


def build_components(node: LlmlabNode) -> dict[str, RoleComponent]:
    """Every role's component of ``node``, keyed by role in the order of ``settings.roles``."""
    roles = node.settings.roles
    unknown = [r for r in roles if r not in BUILDERS]
    if unknown:
        raise ValueError(f"role {unknown[0]!r} has no component in llmlab_grpc.assembly.BUILDERS")
    built = Built()
    for role in BUILD_ORDER:
        if role in roles:
            built.by_role[role] = BUILDERS[role](node, built)
    return {role: built.by_role[role] for role in roles}
