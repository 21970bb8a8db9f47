"""One llmlab node: a grpc.aio server hosting the services of its roles, plus membership.

The node owns everything that must live exactly as long as the process: the server,
the channel pool, the peer table, discovery, and the per-role components. Components get
small typed ports of it (``llmlab_grpc/ports.py``), handed out by ``assembly.py``; none of
them holds the node. Stopping is
ordered so peers learn of the departure first (health NOT_SERVING, mDNS goodbye,
``Leave`` to every peer) and in-flight calls then get ``drain_s`` to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from llmlab_grpc import __version__
from llmlab_grpc.assembly import build_components
from llmlab_grpc.config import NodeSettings
from llmlab_grpc.errors import DuplicateNodeError
from llmlab_grpc.limits import max_request_bytes
from llmlab_grpc.mesh.addresses import announced_hosts
from llmlab_grpc.mesh.auth import mesh_id
from llmlab_grpc.mesh.channels import ChannelPool, TlsFiles, server_options
from llmlab_grpc.mesh.discovery import Announcement, MdnsDiscovery
from llmlab_grpc.mesh.known_models import KnownModels
from llmlab_grpc.mesh.membership import Membership
from llmlab_grpc.mesh.method_table import MethodTable
from llmlab_grpc.mesh.peers import PeerTable
from llmlab_grpc.metrics import NodeMetrics, instrument
from llmlab_grpc.metrics.collectors import NodeCollector
from llmlab_grpc.ports import CacheStatsSlot, LoadMeter, LocalNode
from llmlab_grpc.proto.llmlab.v1 import (
    common_pb2,
    node_pb2,
    node_pb2_grpc,
)
from llmlab_grpc.roles import RoleComponent, ServiceBinding
from llmlab_grpc.services.node_service import NodeService

log = logging.getLogger(__name__)


class LlmlabNode:
    """A running node. ``await node.start()``, then ``await node.stop()``."""

    def __init__(self, settings: NodeSettings) -> None:
        settings.check()
        self.settings = settings
        self.node_id = settings.effective_node_id
        self.started_unix_ms = int(time.time() * 1000)
        self.mesh_id = mesh_id(settings.mesh_secret)
        self.me = LocalNode(self.node_id, settings.name, list(settings.roles), self.mesh_id, self.started_unix_ms)
        """What this node announces; address fields, models, tools and http_url each have one writer."""
        self.tls = (
            TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_ca)
            if settings.tls_cert is not None and settings.tls_key is not None
            else None
        )
        self.channels = ChannelPool(settings.mesh_secret, self.tls)
        self.peers = PeerTable(self.node_id, settings.heartbeat_interval_s)
        self.known_models = KnownModels(settings.node_state_dir, self.mesh_id)
        """Models once served in this mesh (persisted): a cached answer stays askable when none is alive."""
        self.peers.subscribe(self.known_models.on_peer)
        self.load_meter = LoadMeter()
        """Load counters, each claimed by the one component that writes it; heartbeats read ``proto()``."""
        self.cache_stats = CacheStatsSlot()
        """Cache statistics for heartbeats: the cache role's, else the replica role's own copies."""
        self.metrics = NodeMetrics()
        """This node's Prometheus series; roles record into it and register their collectors."""
        self.metrics.add(NodeCollector(self.info, self.load_meter.proto, self.peers.to_protos))
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._bindings: list[ServiceBinding] = []
        self._discovery: MdnsDiscovery | None = None
        self.membership: Membership | None = None
        self.components: dict[str, RoleComponent] = {}
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        self.fatal = ""  # why the node must stop (a duplicate id), set while it runs

    # What the node announces, read from ``me`` (the components write it there).
    @property
    def address(self) -> str:
        return self.me.address

    @property
    def addresses(self) -> list[str]:
        return self.me.addresses

    @property
    def tools(self) -> list[str]:
        return self.me.tools

    @property
    def models(self) -> list[str]:
        return self.me.models

    @property
    def http_url(self) -> str:
        return self.me.http_url

    @property
    def load(self) -> common_pb2.NodeLoad:
        """This node's load now, as heartbeats carry it."""
        return self.load_meter.proto()

    def info(self) -> common_pb2.NodeInfo:
        """What this node announces about itself."""
        me = self.me
        return common_pb2.NodeInfo(
            node_id=me.node_id,
            name=me.name,
            address=me.address,
            roles=me.roles,
            tools=me.tools,
            models=me.models,
            version=__version__,
            mesh_id=me.mesh_id,
            kind=common_pb2.NODE_KIND_GRPC,
            http_url=me.http_url,
            started_unix_ms=me.started_unix_ms,
            addresses=me.addresses,
        )

    def _build_components(self) -> list[ServiceBinding]:
        """Build each role's component from the node's ports (assembly.py) and collect its gRPC services."""
        self.components = build_components(self)
        return [binding for component in self.components.values() for binding in component.bindings()]

    async def start(self) -> str:
        """Bind, serve, announce, and start heartbeats. Returns the bound address."""
        server = grpc.aio.server(options=server_options(max_request_bytes(self.settings)))
        bind = f"{self.settings.host}:{self.settings.port}"
        port = (
            server.add_secure_port(bind, self.tls.server_credentials())
            if self.tls
            else server.add_insecure_port(bind)
        )
        if port == 0:
            raise OSError(f"could not bind the gRPC server to {bind}")
        self.me.addresses = [f"{h}:{port}" for h in announced_hosts(self.settings.host, self.settings.advertise_host)]
        self.me.address = self.me.addresses[0]
        self.membership = Membership(
            self.info,
            self.peers,
            self.channels,
            seeds=self.settings.peers,
            interval_s=self.settings.heartbeat_interval_s,
            timeout_s=self.settings.peer_timeout_s,
            load=self.load_meter.proto,
            cache_stats=self.cache_stats,
            on_conflict=self._must_stop,
        )
        node_service = NodeService(self.info, self.membership, self.load_meter.proto, self.cache_stats,
                                   self.metrics.exposition)
        self._bindings = [
            ServiceBinding(
                node_pb2.DESCRIPTOR.services_by_name["Node"].full_name,
                node_service,
                node_pb2_grpc.add_NodeServicer_to_server,
            ),
            *self._build_components(),
        ]
        # One generic handler for every method, authenticated and timed (mesh/method_table.py).
        methods = MethodTable(self.settings.mesh_secret, instrument(self.metrics))
        for binding in self._bindings:
            methods.add_servicer(binding.add, binding.servicer)
        methods.add_servicer(health_pb2_grpc.add_HealthServicer_to_server, self._health)
        names = [b.full_name for b in self._bindings]
        reflected = [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
        methods.add_servicer(reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
                             reflection.aio.ReflectionServicer(reflected))
        server.add_generic_rpc_handlers((methods,))
        await server.start()
        self._server = server
        for component in self.components.values():
            await component.start()
        if self.models:
            self.known_models.observe(self.models, default=self.models[0])
        for name in ["", *names]:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.membership.start()
        if self.settings.mdns:
            self._discovery = MdnsDiscovery(
                self.info(), self._found, self._lost, interface=self.settings.mdns_interface
            )
            await self._discovery.start()
        return self.address

    def _found(self, found: Announcement) -> None:
        if self.membership is not None:
            self.membership.propose(found.addresses, found.node_id)

    def _lost(self, node_id: str, addresses: tuple[str, ...]) -> None:
        if self.membership is not None:
            task = asyncio.ensure_future(self.membership.lost_announcement(node_id, addresses))
            task.add_done_callback(lambda t: t.exception())

    def _must_stop(self, why: str) -> None:
        """A fault that ends this node (another live node has its id): stop without goodbyes."""
        self.fatal = why
        if self._stop_event is not None:
            self._stop_event.set()

    async def stop(self, reason: str = "stopped") -> None:
        """Leave the mesh politely, then drain in-flight calls for up to ``drain_s``."""
        if self._stopping:
            return
        self._stopping = True
        await self._health.enter_graceful_shutdown()
        if self._discovery is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._discovery.stop(), timeout=2.0)
        if self.membership is not None:
            await self.membership.stop(reason, goodbye=not self.fatal)
        if self._server is not None:
            await self._server.stop(grace=self.settings.drain_s)
        for component in reversed(list(self.components.values())):
            try:
                await component.stop()
            except Exception:
                log.exception("stopping %s failed", type(component).__name__)
        await self.channels.close()

    async def serve_forever(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Start, run until SIGTERM/SIGINT, stop cleanly."""
        stop = self._stop_event = asyncio.Event()
        received: list[str] = []
        loop = asyncio.get_running_loop()

        def on_signal(name: str) -> None:
            received.append(name)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig.name)
        address = await self.start()
        if on_ready is not None:
            on_ready(address)
        if self.fatal:
            stop.set()
        await stop.wait()
        await self.stop(received[0] if received else "stopped")
        if self.fatal:
            raise DuplicateNodeError(self.fatal)
