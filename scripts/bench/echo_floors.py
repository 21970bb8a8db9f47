"""The gRPC floors a bench node serves beside itself: a bare echo, and the same echo behind the
node's own method table ("floor 2": the mesh secret checked and the call counted, as every
node method is). Both answer the bytes last sent to ``SET_ECHO_METHOD``, so a bench sets them to
the reply it compares against (a hit's own reply bytes) and the two legs carry the same payload."""

from __future__ import annotations

import grpc

ECHO_METHOD = "/bench.Echo/Echo"
SET_ECHO_METHOD = "/bench.Echo/Set"
GUARDED_METHOD = "/bench.Guarded/Echo"


async def start_echo_floors(mesh_secret: str) -> tuple[grpc.aio.Server, int]:
    """Start both echoes on one server on 127.0.0.1; returns the server and its port."""
    from llmlab_grpc.mesh.method_table import MethodTable
    from llmlab_grpc.metrics import NodeMetrics, instrument

    state = {"echo": b""}

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return state["echo"]

    async def set_echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        state["echo"] = request
        return b""

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
