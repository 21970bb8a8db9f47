"""The OpenAI-compatible HTTP API (``/v1``) on the node's HTTP port, so every OpenAI client can use the mesh.

Requests go through the planner (tools, cache, trace); see docs/openai_api.md.
``mount(settings, gateway, http)`` adds the routes to the bridge's ``HttpServer``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmlab_grpc.openai_api.gateway import PlannerGateway
from llmlab_grpc.openai_api.routes import ApiSettings, OpenAIApi

if TYPE_CHECKING:
    from llmlab_grpc.bridge.http import HttpServer

__all__ = ["OpenAIApi", "PlannerGateway", "mount"]


def mount(settings: ApiSettings, gateway: PlannerGateway, http: HttpServer) -> OpenAIApi:
    """Serve ``/v1/*`` on ``http`` through ``gateway``; returns the API object (for tests and introspection)."""
    api = OpenAIApi(settings, gateway)
    http.add_routes(api.routes())
    return api
