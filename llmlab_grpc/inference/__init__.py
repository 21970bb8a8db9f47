"""LLM inference on Ray: the ``llm`` role, its ``Inference`` gRPC service and its backends.

Layout (one job per module):

- ``backends/``: model runtimes behind one interface (``llama_cpp`` embedded default,
  ``ollama``, ``openai``), each yielding text pieces then a ``Usage``.
- ``ray_host``: one Ray actor per model; tokens streamed with Ray streaming generators;
  admission (RESOURCE_EXHAUSTED) and cancellation.
- ``runtime``: request validation and limits, protos in and out (the in-process API).
- ``service`` / ``role``: the gRPC servicer and the ``llm`` RoleComponent.
- ``client``: ``generate_stream`` / ``generate_text`` / ``list_models`` for a peer's
  channel or this node's runtime alike (what the planner calls).
- ``ray_head``: one ``ray start --head`` process for ``llmlab up``.

Importing this package stays light: nothing here imports Ray or llama.cpp until a
node with the ``llm`` role starts.
"""

from llmlab_grpc.inference.client import generate_stream, generate_text, list_models
from llmlab_grpc.inference.errors import InferenceError

__all__ = ["InferenceError", "generate_stream", "generate_text", "list_models"]
