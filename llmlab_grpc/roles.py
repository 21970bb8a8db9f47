"""What each role adds to a node, found by name so features plug in without touching node.py.

A role factory is ``build(node) -> RoleComponent``; every role in ``llmlab_grpc.ROLES`` has one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from llmlab_grpc.node import LlmlabNode


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer and how to add it to a server, with its full name for health and reflection."""

    full_name: str
    servicer: Any
    add: Callable[[Any, grpc.aio.Server], None]


class RoleComponent:
    """Base of what a role contributes: gRPC services plus a start/stop lifecycle.

    ``start`` runs after the server is bound (``node.address`` is known) and before
    discovery announces the node, so a component can set ``node.tools``/``node.models``
    in time for the announcement.
    """

    def __init__(self, node: LlmlabNode) -> None:
        self.node = node

    def bindings(self) -> list[ServiceBinding]:
        return []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


ROLE_FACTORIES: dict[str, str] = {
    # role: "module:function" returning a RoleComponent; features add their line here.
    "bridge": "llmlab_grpc.bridge.component:build",
    "cache": "llmlab_grpc.cache.component:build",
    "llm": "llmlab_grpc.inference.role:build",
    "planner": "llmlab_grpc.planner.service:build",
    "replica": "llmlab_grpc.replication.component:build",
    "tools": "llmlab_grpc.tools.component:build",
}


def load_factory(role: str) -> Callable[[LlmlabNode], RoleComponent] | None:
    target = ROLE_FACTORIES.get(role)
    if target is None:
        return None
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]
