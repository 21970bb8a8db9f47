"""Serve chosen methods of a generated gRPC service as bytes in, bytes out.

The generated ``add_*Servicer_to_server`` stays the one list of a service's methods; a hot
method whose handler reads and writes wire bytes itself (``Cache.Get``, ``Planner.Ask``) is
swapped in as the generated code registers the service, with no (de)serializer around it. The
node's method table still sees every call (secret checked, call counted).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

BytesHandler = Callable[[bytes, Any], Awaitable[bytes]]
"""``(request bytes, servicer context) -> reply bytes``."""


class BytesMethods:
    """The server a generated ``add_*Servicer_to_server`` sees: passes everything on, the methods
    named in ``handlers`` served by those bytes handlers instead."""

    def __init__(self, server: Any, handlers: dict[str, BytesHandler]) -> None:
        self._server = server
        self._handlers = handlers

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        swapped: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
            name: grpc.unary_unary_rpc_method_handler(handler) for name, handler in self._handlers.items()}
        self._server.add_registered_method_handlers(service, {**handlers, **swapped})

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(handlers)
