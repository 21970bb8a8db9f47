"""The ``Inference`` gRPC service: the runtime's stream as server-streamed messages.

An ``InferenceError`` becomes the status it names. When the client cancels or its
deadline passes, grpc.aio cancels this handler; the runtime's ``finally`` then
cancels the Ray generator, so the model stops generating for nobody.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from llmlab_grpc.inference.errors import InferenceError
from llmlab_grpc.inference.runtime import InferenceRuntime
from llmlab_grpc.proto.llmlab.v1 import inference_pb2, inference_pb2_grpc


class InferenceService(inference_pb2_grpc.InferenceServicer):
    def __init__(self, runtime: InferenceRuntime) -> None:
        self.runtime = runtime

    async def Generate(
        self, request: inference_pb2.GenerateRequest,
        context: grpc.aio.ServicerContext[inference_pb2.GenerateRequest, inference_pb2.GenerateResponse],
    ) -> AsyncIterator[inference_pb2.GenerateResponse]:
        try:
            async for response in self.runtime.generate(request):
                yield response
        except InferenceError as err:
            await context.abort(err.code, err.message)

    async def ListModels(
        self, request: inference_pb2.ListModelsRequest,
        context: grpc.aio.ServicerContext[inference_pb2.ListModelsRequest, inference_pb2.ListModelsResponse],
    ) -> inference_pb2.ListModelsResponse:
        return self.runtime.list_models()
