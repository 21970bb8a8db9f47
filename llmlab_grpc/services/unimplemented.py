"""Servicers for roles whose work has not landed yet.

They answer every RPC with UNIMPLEMENTED and a message naming what is missing, so a
client learns the truth instead of a made-up result, and reflection still lists the
service so the contract is discoverable.
"""

from __future__ import annotations

import inspect
from typing import Any

import grpc


def not_yet(servicer_base: type, service: str, lands_with: str) -> Any:
    """An instance of ``servicer_base`` whose every method aborts with UNIMPLEMENTED."""

    def make(method: str) -> Any:
        message = f"{service}.{method} is not implemented yet on this node (it lands with {lands_with})"
        base_method = getattr(servicer_base, method)
        if inspect.isasyncgenfunction(base_method) or "stream" in method.lower():

            async def streaming(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
                yield  # pragma: no cover

            return streaming

        async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

        return unary

    methods = {
        name: make(name)
        for name, value in vars(servicer_base).items()
        if callable(value) and not name.startswith("_")
    }
    return type(f"Unimplemented{service}", (servicer_base,), methods)()
