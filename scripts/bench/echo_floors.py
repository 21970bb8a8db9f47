"""The gRPC floors a bench node serves beside itself: a bare echo, and the same echo behind the
node's own method table ("floor 2": the mesh secret checked and the call counted, as every
node method is). Both answer the bytes last sent to ``SET_ECHO_METHOD``, so a bench sets them to
the reply it compares against (a hit's own reply bytes) and the two legs carry the same payload."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import grpc

ECHO_METHOD = "/bench.Echo/Echo"
SET_ECHO_METHOD = "/bench.Echo/Set"
GUARDED_METHOD = "/bench.Guarded/Echo"


Handler = Callable[[bytes, grpc.aio.ServicerContext], Any]


def echo_handlers(reply: bytes = b"") -> tuple[Handler, Handler]:
    """(echo, set): the echo answers ``reply``, then whatever bytes were last sent to set."""
    state = {"reply": reply}

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return state["reply"]

    async def set_echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        state["reply"] = request
        return b""

    return echo, set_echo


async def start_echo_floors(mesh_secret: str) -> tuple[grpc.aio.Server, int]:
    """Start both echoes on one server on 127.0.0.1; returns the server and its port."""
    from llmlab_grpc.mesh.method_table import MethodTable
    from llmlab_grpc.metrics import NodeMetrics, instrument

    echo, set_echo = echo_handlers()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Set": grpc.unary_unary_rpc_method_handler(set_echo)}),))
    table = MethodTable(mesh_secret, instrument(NodeMetrics()))
    table.add(GUARDED_METHOD, grpc.unary_unary_rpc_method_handler(echo))
    server.add_generic_rpc_handlers((table,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def serve_node_with_floors(argv: list[str], announce: Callable[[Any, str, int], None],
                           after_start: Callable[[Any], None] | None = None) -> int:
    """A bench's child mode: ``llmlab node ARGV`` in this process and the echo floors beside it,
    until SIGTERM or SIGINT. ``after_start(node)`` adds what the bench needs (an HTTP route);
    ``announce(settings, node address, echo port)`` prints what the parent waits for."""
    from llmlab_grpc.cli import _node_settings, build_parser
    from llmlab_grpc.node import LlmlabNode

    settings = _node_settings(build_parser().parse_args(["node", *argv]))

    async def run() -> None:
        node = LlmlabNode(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        address = await node.start()
        if after_start is not None:
            after_start(node)
        server, port = await start_echo_floors(settings.mesh_secret)
        announce(settings, address, port)
        await stop.wait()
        await server.stop(None)
        await node.stop()

    asyncio.run(run())
    return 0
