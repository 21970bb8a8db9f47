"""What a role adds to a node: gRPC services plus a start/stop lifecycle.

Each role in ``llmlab_grpc.ROLES`` has a component; ``llmlab_grpc/assembly.py`` builds it
from the node's ports (``llmlab_grpc/ports.py``), never from the node itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer and how to add it to a server, with its full name for health and reflection."""

    full_name: str
    servicer: Any
    add: Callable[[Any, grpc.aio.Server], None]


class RoleComponent:
    """Base of what a role contributes: gRPC services plus a start/stop lifecycle.

    ``start`` runs after the server is bound (the node's ``LocalNode.address`` is known) and
    before discovery announces the node, so a component can publish its tools or models
    in time for the announcement.
    """

    def bindings(self) -> list[ServiceBinding]:
        return []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
