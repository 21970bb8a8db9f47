"""The ``tools`` role: a registry of this node's tools, the router, and the ToolExecutor service.

``router`` runs a tool anywhere in the mesh; ``registry`` is where tools are added or
removed at run time. ``LocalNode.tools`` (announced in heartbeats and mDNS) follows the
registry on every change. The node hands it its ports (``assembly.py``), including
``mobile``: this node's bridge role, when it has one, through which paired phones run tools.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from llmlab_grpc.mesh.endpoints import MeshEndpoints
from llmlab_grpc.proto.llmlab.v1 import tool_executor_pb2, tool_executor_pb2_grpc
from llmlab_grpc.roles import RoleComponent, ServiceBinding
from llmlab_grpc.tools.catalog import ToolCatalog
from llmlab_grpc.tools.registry import (
    BUILTIN_TOOLS,
    ToolRegistry,
    builtin_tools,
    entry_point_tools,
    module_tools,
)
from llmlab_grpc.tools.router import ToolRouter
from llmlab_grpc.tools.service import ToolExecutorService

if TYPE_CHECKING:
    from llmlab_grpc.config import NodeSettings
    from llmlab_grpc.ports import Channels, Gauge, LocalNode, MobileTools, Slot, WatchedPeers

log = logging.getLogger(__name__)


def enabled_builtins(setting: list[str]) -> list[str]:
    """``["all"]`` (the default) means every built-in; ``[]`` or ``["none"]`` none."""
    if "all" in setting:
        return list(BUILTIN_TOOLS)
    return [name for name in setting if name != "none"]


class ToolsComponent(RoleComponent):
    """What the tools role adds to a node."""

    def __init__(self, settings: NodeSettings, me: LocalNode, peers: WatchedPeers, channels: Channels,
                 mobile: Slot[MobileTools], tools_running: Gauge, tool_calls: Gauge) -> None:
        self.settings = settings
        self.me = me
        self.peers = peers
        self.mobile = mobile
        self.registry = ToolRegistry()
        self.catalog = ToolCatalog(me, peers, channels, self.registry, mobile)
        self.router = ToolRouter(me, peers, channels, self.registry, self.catalog, mobile, tools_running,
                                 settings.heartbeat_interval_s)
        self.service = ToolExecutorService(self.router, self.catalog, tool_calls)
        self.registry.subscribe(self._announce)
        peers.subscribe(lambda event, record: self.catalog.forget(record.node_id) if event == "left" else None)

    def bindings(self) -> list[ServiceBinding]:
        return [ServiceBinding(
            tool_executor_pb2.DESCRIPTOR.services_by_name["ToolExecutor"].full_name,
            self.service,
            tool_executor_pb2_grpc.add_ToolExecutorServicer_to_server,
        )]

    async def start(self) -> None:
        settings = self.settings
        tools = [
            *builtin_tools(enabled_builtins(settings.builtin_tools), settings),
            *entry_point_tools(settings),
            *module_tools(settings.tool_plugins, settings),
        ]
        mesh = MeshEndpoints(self.me, self.peers)
        for tool in tools:
            try:
                tool.protect_mesh(mesh)
                await self.registry.add(tool)
            except Exception as exc:
                log.warning("tool %s left out: %s: %s", tool.name, type(exc).__name__, exc)
        self._announce()
        log.info("tools: %s", ", ".join(self.registry.names()) or "none")

    async def stop(self) -> None:
        await self.registry.close_all()

    def _announce(self) -> None:
        self.me.tools = self.registry.names()
