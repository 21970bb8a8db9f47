"""The ``llm`` role: Ray-hosted models behind the node's ``Inference`` service.

``start`` joins (``--ray-address``) or starts the node's Ray, loads one actor per
model and publishes the model names in ``LocalNode.models`` before the node is announced,
so routers only ever see models that are loaded. It is the one writer of the node's
``generations_running`` (running or queued here) and ``tokens_per_second`` load counters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmlab_grpc.inference.runtime import InferenceRuntime
from llmlab_grpc.inference.service import InferenceService
from llmlab_grpc.inference.types import Usage
from llmlab_grpc.proto.llmlab.v1 import inference_pb2, inference_pb2_grpc
from llmlab_grpc.roles import RoleComponent, ServiceBinding

if TYPE_CHECKING:
    from llmlab_grpc.config import NodeSettings
    from llmlab_grpc.metrics import NodeMetrics
    from llmlab_grpc.ports import Gauge, LocalNode


class LlmComponent(RoleComponent):
    def __init__(self, settings: NodeSettings, me: LocalNode, metrics: NodeMetrics, generations: Gauge,
                 speed: Gauge) -> None:
        self.me = me
        self.metrics = metrics
        self.generations = generations
        self.speed = speed
        self.runtime = InferenceRuntime(me.node_id, settings, on_load=self._count, on_done=self._done)

    def _count(self, delta: int) -> None:
        self.generations.add(delta)

    def _done(self, model: str, usage: Usage | None, seconds: float, decode_seconds: float) -> None:
        """Tokens and speed into the node's metrics (one that failed or was cancelled counts as incomplete)."""
        if usage is None:
            self.metrics.generation_done(model, 0, 0, seconds, 0.0, outcome="incomplete")
        else:
            self.metrics.generation_done(model, usage.prompt_tokens, usage.completion_tokens, seconds,
                                         decode_seconds)
            # Heartbeats carry it: planners give a faster node more of the work (mesh/spreading.py).
            self.speed.set(self.metrics.tokens_per_second(self.me.models))

    def bindings(self) -> list[ServiceBinding]:
        return [ServiceBinding(
            inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name,
            InferenceService(self.runtime),
            inference_pb2_grpc.add_InferenceServicer_to_server,
        )]

    async def start(self) -> None:
        await self.runtime.start()
        self.me.models = self.runtime.model_names()

    async def stop(self) -> None:
        self.me.models = []
        await self.runtime.stop()
