"""The OpenAI-compatible HTTP API (``/v1``) on the node's HTTP port, so every OpenAI client can use the mesh.

Requests go through the planner (tools, cache, trace); see docs/openai_api.md.
``mount(node, http)`` adds the routes to the bridge's ``HttpServer``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmlab_grpc.openai_api.routes import OpenAIApi

if TYPE_CHECKING:
    from llmlab_grpc.bridge.http import HttpServer
    from llmlab_grpc.node import LlmlabNode

__all__ = ["OpenAIApi", "mount"]


def mount(node: LlmlabNode, http: HttpServer) -> OpenAIApi:
    """Serve ``/v1/*`` on ``http`` for ``node``; returns the API object (for tests and introspection)."""
    api = OpenAIApi(node)
    http.add_routes(api.routes())
    return api
