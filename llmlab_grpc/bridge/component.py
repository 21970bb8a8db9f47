"""The ``bridge`` role: the node's HTTP side and the gateway to mobile nodes.

It runs one ASGI app (``HttpServer``) on ``--http-port`` inside the node's event loop:
``/`` the PWA a phone runs as a mobile node, ``/llmlab`` the dashboard, the read-only
JSON API under ``/api``, the node's Prometheus metrics at ``/metrics``, the WebSocket
``/ws/task``, the OpenAI-compatible ``/v1`` API (llmlab_grpc.openai_api), and the static
files of the frontend. Other HTTP features add their routes with ``http.add_routes([...])``.
What it uses of its node comes in ``BridgePorts`` (built by ``assembly.py``).

``start`` sets ``LocalNode.http_url`` before the node is announced, and prints
``llmlab node NAME dashboard URL/llmlab`` and ``llmlab node NAME dashboard-link
URL/llmlab?token=...`` (a one-time link that gives a browser a dashboard session,
bridge/access.py) for launchers to relay.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from llmlab_grpc.bridge.access import Access, DashboardSessions
from llmlab_grpc.bridge.api import StatusApi
from llmlab_grpc.bridge.cache_sync import CacheSync, SyncPolicy, attach
from llmlab_grpc.bridge.http import HttpLimits, HttpServer
from llmlab_grpc.bridge.hub import MobileHub
from llmlab_grpc.bridge.tool_service import MobileToolExecutor
from llmlab_grpc.bridge.ws import TaskSocket
from llmlab_grpc.mesh.net import WILDCARDS, lan_ipv4_addresses
from llmlab_grpc.metrics import CONTENT_TYPE
from llmlab_grpc.openai_api import PlannerGateway
from llmlab_grpc.openai_api import mount as mount_openai_api
from llmlab_grpc.proto.llmlab.v1 import tool_executor_pb2, tool_executor_pb2_grpc
from llmlab_grpc.roles import RoleComponent, ServiceBinding
from llmlab_grpc.tools.base import ToolOutcome

if TYPE_CHECKING:
    from llmlab_grpc.config import NodeSettings
    from llmlab_grpc.planner.mesh_calls import MeshCalls
    from llmlab_grpc.ports import CacheEvents, Channels, LoadView, LocalNode, LocalPlanner, MobileRows
    from llmlab_grpc.proto.llmlab.v1 import common_pb2

mimetypes.add_type("application/manifest+json", ".webmanifest")


def frontend_dir() -> Path:
    """The PWA and dashboard files, shipped as package data of ``llmlab_grpc``."""
    return Path(str(resources.files("llmlab_grpc") / "frontend"))


class _Static(StaticFiles):
    """Static files that browsers revalidate, so a changed frontend shows at the next load."""

    def file_response(self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["cache-control"] = "no-cache"
        return response


@dataclass(frozen=True)
class BridgePorts:
    """What the bridge role uses of its node."""

    settings: NodeSettings
    me: LocalNode
    peers: MobileRows
    """The peer table: read by the dashboard API, and the hub writes its phones' rows."""
    channels: Channels
    info: Callable[[], common_pb2.NodeInfo]
    load: LoadView
    cache_stats: Callable[[], common_pb2.CacheStatistics | None]
    metrics: Callable[[], bytes]
    """The node's Prometheus exposition."""
    calls: MeshCalls
    """The mesh as the ``/v1`` gateway reaches it (models, planner peers)."""
    planner: LocalPlanner | None
    """This node's planner when it has the role (``/v1`` calls it in-process)."""
    cache_events: CacheEvents | None
    """This node's cache when it has the role (its entries are synced to paired phones)."""


class BridgeComponent(RoleComponent):
    """HTTP server + mobile hub + cache sync of one bridge node."""

    def __init__(self, ports: BridgePorts) -> None:
        self.ports = ports
        self.me = ports.me
        settings = self.settings = ports.settings
        self.hub = MobileHub(settings, ports.me, ports.peers)
        self.cache_sync = CacheSync(self.hub, settings.bridge_max_message_bytes,
                                    SyncPolicy(settings.bridge_sync_namespaces, settings.bridge_sync_private))
        self.http = HttpServer(settings.http_host or settings.host, settings.http_port, settings.advertise_host,
                               ws_max_size=4 * settings.bridge_max_message_bytes,
                               limits=HttpLimits(settings.http_header_timeout_s, settings.http_idle_timeout_s,
                                                 settings.http_max_connections))
        self.access = Access(settings.mesh_secret, DashboardSessions(settings.mesh_secret, ports.me.mesh_id),
                             lambda: self.http.port)
        self.api = StatusApi(self)
        self.socket = TaskSocket(self.hub, self.allowed_origins)
        self._origins: set[str] = set()
        files = frontend_dir()
        self.http.routes.extend([
            Route("/", self._page(files / "index.html")),
            Route("/llmlab", self._dashboard(files / "dashboard.html")),
            Route("/llmlab/", lambda request: RedirectResponse("/llmlab", status_code=308)),
            *self.api.routes(),
            Route("/metrics", self._metrics),
            WebSocketRoute("/ws/task", self.socket.endpoint),
            Mount("/", app=_Static(directory=files), name="frontend"),
        ])
        self.openai_api = mount_openai_api(settings, PlannerGateway(ports.calls, ports.planner), self.http)

    @staticmethod
    def _page(path: Path) -> Callable[[Request], Awaitable[Response]]:
        async def page(request: Request) -> Response:
            return FileResponse(path, media_type="text/html", headers={"cache-control": "no-cache"})

        return page

    async def _metrics(self, request: Request) -> Response:
        """The node's metrics for Prometheus; readable by whoever may read ``/api`` (bridge/access.py)."""
        if (denied := self.api.denied(request)) is not None:
            return denied
        return Response(self.ports.metrics(), media_type=CONTENT_TYPE)

    def _dashboard(self, path: Path) -> Callable[[Request], Awaitable[Response]]:
        """The dashboard page; ``?token=`` (a one-time link) is spent for a session cookie, then dropped."""
        page = self._page(path)

        async def dashboard(request: Request) -> Response:
            token = request.query_params.get("token")
            if token is None:
                return await page(request)
            value = self.access.sessions.redeem(token[:200])
            if value is None:
                return PlainTextResponse(
                    "This dashboard link was used already or has expired. Ask for a new one with: llmlab dashboard\n",
                    status_code=403, headers={"cache-control": "no-store"})
            secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "") == "https"
            return Response(status_code=303, headers={
                "location": "/llmlab", "cache-control": "no-store",
                "set-cookie": self.access.sessions.cookie_header(value, secure)})

        return dashboard

    def bindings(self) -> list[ServiceBinding]:
        if "tools" in self.me.roles:
            return []  # the tools role serves ToolExecutor and calls execute_on_mobile
        return [ServiceBinding(
            tool_executor_pb2.DESCRIPTOR.services_by_name["ToolExecutor"].full_name,
            MobileToolExecutor(self.hub),
            tool_executor_pb2_grpc.add_ToolExecutorServicer_to_server,
        )]

    def allowed_origins(self) -> set[str]:
        return self._origins

    def _compute_origins(self) -> set[str]:
        port = self.http.port
        hosts = {"127.0.0.1", "localhost", "[::1]"}
        hosts.add(urlsplit(self.me.http_url).hostname or "127.0.0.1")
        if self.http.host in WILDCARDS:
            hosts.update(lan_ipv4_addresses())
        origins = {f"http://{h if ':' not in h or h.startswith('[') else f'[{h}]'}:{port}" for h in hosts}
        origins |= {o.rstrip("/").lower() for o in self.settings.bridge_allowed_origins}
        return {o.lower() for o in origins}

    async def start(self) -> None:
        url = await self.http.start()
        self.me.http_url = url
        self._origins = self._compute_origins()
        self.hub.start()
        attach(self.cache_sync, self.ports.cache_events)
        self.cache_sync.start()
        print(f"llmlab node {self.me.name} dashboard {url}/llmlab", flush=True)
        token, _ = self.access.sessions.mint_link()
        print(f"llmlab node {self.me.name} dashboard-link {url}/llmlab?token={token}", flush=True)

    async def stop(self) -> None:
        await self.cache_sync.stop()
        await self.hub.stop()
        await self.http.stop()

    async def execute_on_mobile(self, node_id: str, tool: str, arguments: dict[str, Any],
                                timeout_s: float) -> ToolOutcome:
        """Run a tool on a mobile node paired here; ``ToolFailure("UNAVAILABLE")`` means fail over."""
        return await self.hub.execute(node_id, tool, arguments, timeout_s)

    def mobile_tool_specs(self) -> list[common_pb2.ToolSpec]:
        """The tools of the mobile nodes paired here (the tools role lists them as this node's)."""
        return self.hub.tool_specs()
