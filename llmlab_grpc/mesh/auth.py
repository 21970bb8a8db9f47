"""Mesh-secret authentication on both ends of every llmlab gRPC call.

The secret travels as ``authorization: Bearer <secret>`` metadata, which every
gRPC library can send, so a client in any language can call the mesh. A node's
server checks it on every call with a constant-time compare (``method_table.py``,
which resolves each call without an interceptor); only health checking and
reflection stay open, so probes and grpcurl-style tools work without it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import grpc

OPEN_METHOD_PREFIXES: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def mesh_id(secret: str) -> str:
    """Public id of a mesh: a one-way digest of the secret, safe to announce on the LAN."""
    return hashlib.sha256(b"llmlab-mesh-id\x00" + secret.encode()).hexdigest()[:16]


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    """The metadata a client sends."""
    return (("authorization", f"Bearer {secret}"),)


def aborting_handler(like: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> Any:
    """A handler of the same streaming shape as ``like`` that fails the call at once."""

    async def abort(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def abort_stream(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    if like.request_streaming and like.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort_stream)
    if like.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if like.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort_stream)
    return grpc.unary_unary_rpc_method_handler(abort)


class _AddAuth:
    """Shared body of the client interceptors: add the bearer token to the call."""

    def __init__(self, secret: str) -> None:
        self._metadata = bearer(secret)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *self._metadata)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryUnary(_AddAuth, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), request)


class _UnaryStream(_AddAuth, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), request)


class _StreamUnary(_AddAuth, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), request_iterator)


class _StreamStream(_AddAuth, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), request_iterator)


def client_interceptors(secret: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that authenticate every kind of call on an aio channel."""
    return [_UnaryUnary(secret), _UnaryStream(secret), _StreamUnary(secret), _StreamStream(secret)]
