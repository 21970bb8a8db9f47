"""Calling a model: on an llm peer over gRPC, or on this node's own runtime, with one API.

    from llmlab_grpc.inference.client import generate_stream, generate_text, list_models

    # a peer (the planner's router: node.peers.with_role("llm") filtered by info.models)
    channel = node.channels.get(peer.info.address)        # authenticated aio channel
    async for response in generate_stream(channel, "smollm2-135m",
                                          [{"role": "user", "content": "Tell me a joke"}],
                                          {"max_tokens": 64, "temperature": 0.0, "seed": 1}):
        if response.HasField("text"):
            ...                                           # a piece of the answer, as soon as it exists
        else:
            usage = response.usage                        # always last: tokens, finish_reason, model, node_id

    # this node, without a network hop (same validation, limits and errors)
    local = node.components["llm"]                        # an LlmComponent (or its .runtime)
    text, usage = await generate_text(local, "smollm2-135m", messages, params)

``messages`` are ``ChatMessage`` protos or dicts ``{"role", "content"[, "tool_call_id",
"tool_calls_json"]}``; ``params`` a ``GenerationParams`` proto, a dict of its fields, or
None (the serving node's defaults). Every failure, local or remote, is an
``InferenceError`` whose ``code`` is the gRPC status (UNAVAILABLE: node or backend
down, try another node; RESOURCE_EXHAUSTED: that model's queue is full; NOT_FOUND:
the node does not serve the model; INVALID_ARGUMENT: fix the request;
DEADLINE_EXCEEDED: ``timeout`` passed). Leaving the ``async for`` early cancels the
generation on the serving node.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from llmlab_grpc.inference.errors import InferenceError
from llmlab_grpc.proto.llmlab.v1 import common_pb2, inference_pb2, inference_pb2_grpc

Target = Any
"""A ``grpc.aio.Channel``, an ``LlmComponent`` or an ``InferenceRuntime``."""


def build_request(model: str, messages: Sequence[common_pb2.ChatMessage | dict[str, Any]],
                  params: common_pb2.GenerationParams | dict[str, Any] | None = None
                  ) -> inference_pb2.GenerateRequest:
    turns = [m if isinstance(m, common_pb2.ChatMessage) else common_pb2.ChatMessage(**m) for m in messages]
    if params is None:
        params = common_pb2.GenerationParams()
    elif isinstance(params, dict):
        params = common_pb2.GenerationParams(**params)
    return inference_pb2.GenerateRequest(model=model, messages=turns, params=params)


def _runtime(target: Target) -> Any:
    return getattr(target, "runtime", target)


async def generate_stream(target: Target, model: str,
                          messages: Sequence[common_pb2.ChatMessage | dict[str, Any]],
                          params: common_pb2.GenerationParams | dict[str, Any] | None = None, *,
                          timeout: float | None = None,
                          metadata: Sequence[tuple[str, str]] | None = None,
                          ) -> AsyncIterator[inference_pb2.GenerateResponse]:
    """Text pieces as they are generated, then one ``usage`` message; ``InferenceError`` on failure."""
    request = build_request(model, messages, params)
    if isinstance(target, grpc.aio.Channel):
        call = inference_pb2_grpc.InferenceStub(target).Generate(request, timeout=timeout, metadata=metadata)
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as err:
            raise InferenceError(err.code(), err.details() or err.code().name) from err
        finally:
            call.cancel()  # no-op when finished; stops the remote generation when we left early
        return
    stream = _runtime(target).generate(request)
    try:
        async with asyncio.timeout(timeout):
            async for response in stream:
                yield response
    except TimeoutError as exc:
        raise InferenceError(grpc.StatusCode.DEADLINE_EXCEEDED,
                             f"generation with {model} did not finish within {timeout:g} s") from exc
    finally:
        await stream.aclose()


async def generate_text(target: Target, model: str,
                        messages: Sequence[common_pb2.ChatMessage | dict[str, Any]],
                        params: common_pb2.GenerationParams | dict[str, Any] | None = None, *,
                        timeout: float | None = None,
                        metadata: Sequence[tuple[str, str]] | None = None,
                        ) -> tuple[str, inference_pb2.Usage]:
    """The whole answer and its usage."""
    pieces: list[str] = []
    usage = inference_pb2.Usage()
    async for response in generate_stream(target, model, messages, params, timeout=timeout, metadata=metadata):
        if response.HasField("usage"):
            usage = response.usage
        else:
            pieces.append(response.text)
    return "".join(pieces), usage


async def list_models(target: Target, *, timeout: float | None = 10.0,
                      metadata: Sequence[tuple[str, str]] | None = None) -> list[inference_pb2.ModelInfo]:
    """The models a node serves."""
    if isinstance(target, grpc.aio.Channel):
        try:
            reply = await inference_pb2_grpc.InferenceStub(target).ListModels(
                inference_pb2.ListModelsRequest(), timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as err:
            raise InferenceError(err.code(), err.details() or err.code().name) from err
        return list(reply.models)
    return list(_runtime(target).list_models().models)
