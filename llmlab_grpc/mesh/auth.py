"""Mesh-secret authentication on both ends of every llmlab gRPC call.

The secret travels as ``authorization: Bearer <secret>`` metadata, which every
gRPC library can send, so a client in any language can call the mesh. A node's
server checks it on every call with a constant-time compare (``method_table.py``,
which resolves each call without an interceptor); only health checking and
reflection stay open, so probes and grpcurl-style tools work without it.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import NoReturn, TypeVar

import grpc

OPEN_METHOD_PREFIXES: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Details = grpc.aio.ClientCallDetails


def mesh_id(secret: str) -> str:
    """Public id of a mesh: a one-way digest of the secret, safe to announce on the LAN."""
    return hashlib.sha256(b"llmlab-mesh-id\x00" + secret.encode()).hexdigest()[:16]


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    """The metadata a client sends."""
    return (("authorization", f"Bearer {secret}"),)


def aborting_handler(like: grpc.RpcMethodHandler[Req, Resp], code: grpc.StatusCode,
                     message: str) -> grpc.RpcMethodHandler[Req, Resp]:
    """A handler of the same streaming shape as ``like`` that fails the call at once."""

    async def abort(_request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> NoReturn:
        await context.abort(code, message)

    async def abort_stream(_request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> AsyncIterator[Resp]:
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
    async def intercept_unary_unary(
        self, continuation: Callable[[Details, Req], Awaitable[grpc.aio.UnaryUnaryCall[Req, Resp]]],
        client_call_details: Details, request: Req,
    ) -> grpc.aio.UnaryUnaryCall[Req, Resp]:
        return await continuation(self._details(client_call_details), request)


class _UnaryStream(_AddAuth, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[[Details, Req], Awaitable[grpc.aio.UnaryStreamCall[Req, Resp]]],
        client_call_details: Details, request: Req,
    ) -> grpc.aio.UnaryStreamCall[Req, Resp]:
        return await continuation(self._details(client_call_details), request)


Requests = AsyncIterable[Req] | Iterable[Req]


class _StreamUnary(_AddAuth, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Callable[[Details, Requests[Req]], Awaitable[grpc.aio.StreamUnaryCall[Req, Resp]]],
        client_call_details: Details, request_iterator: Requests[Req],
    ) -> grpc.aio.StreamUnaryCall[Req, Resp]:
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStream(_AddAuth, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Callable[[Details, Requests[Req]], Awaitable[grpc.aio.StreamStreamCall[Req, Resp]]],
        client_call_details: Details, request_iterator: Requests[Req],
    ) -> grpc.aio.StreamStreamCall[Req, Resp]:
        return await continuation(self._details(client_call_details), request_iterator)


def client_interceptors(secret: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that authenticate every kind of call on an aio channel."""
    return [_UnaryUnary(secret), _UnaryStream(secret), _StreamUnary(secret), _StreamStream(secret)]
