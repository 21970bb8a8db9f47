"""Authentication: every llmlab RPC needs the mesh secret; health stays open; other meshes are ignored."""

from __future__ import annotations

import time

import grpc
import pytest

from llmlab_grpc.mesh.auth import mesh_id
from llmlab_grpc.proto.llmlab.v1 import node_pb2, node_pb2_grpc
from tests.helpers import wait_until


def test_mesh_id_is_a_digest_not_the_secret() -> None:
    assert mesh_id("correct horse battery") == mesh_id("correct horse battery")
    assert mesh_id("correct horse battery") != mesh_id("correct horse battery!")
    assert "horse" not in mesh_id("correct horse battery")


def test_no_token_wrong_token_right_token(node_factory, secret) -> None:  # type: ignore[no-untyped-def]
    node = node_factory("auth", "--roles", "cache,replica", "--no-mdns")
    with grpc.insecure_channel(node.address) as channel:
        stub = node_pb2_grpc.NodeStub(channel)
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetInfo(node_pb2.GetInfoRequest(), timeout=5)
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization" in missing.value.details()
        with pytest.raises(grpc.RpcError) as wrong:
            stub.GetInfo(node_pb2.GetInfoRequest(), metadata=(("authorization", "Bearer nope-nope"),), timeout=5)
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "wrong mesh secret" in wrong.value.details()
        with pytest.raises(grpc.RpcError) as scheme:
            stub.GetInfo(node_pb2.GetInfoRequest(), metadata=(("authorization", secret),), timeout=5)
        assert scheme.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.GetInfo(node_pb2.GetInfoRequest(), metadata=(("authorization", f"Bearer {secret}"),), timeout=5)
    assert reply.info.name == "auth"
    assert reply.info.mesh_id == mesh_id(secret)


def test_streaming_rpcs_are_guarded_too(node_factory) -> None:  # type: ignore[no-untyped-def]
    from llmlab_grpc.proto.llmlab.v1 import planner_pb2, planner_pb2_grpc

    node = node_factory("auth-stream", "--no-mdns", "--roles", "planner")
    with grpc.insecure_channel(node.address) as channel, pytest.raises(grpc.RpcError) as err:
        list(planner_pb2_grpc.PlannerStub(channel).AskStream(planner_pb2.AskStreamRequest(), timeout=5))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_node_of_another_mesh_is_not_a_peer(node_factory, secret) -> None:  # type: ignore[no-untyped-def]
    """Static seeds pointing across meshes: both sides refuse, neither table gains the other."""
    ours = node_factory("ours", "--roles", "cache,replica", "--no-mdns")
    theirs = node_factory(
        "theirs", "--roles", "cache,replica", "--no-mdns", "--peer", ours.address, secret="a-different-mesh-secret"
    )
    friend = node_factory("friend", "--roles", "cache,replica", "--no-mdns", "--peer", ours.address)
    wait_until(lambda: ours.peer_names() == {"friend"}, 15, what="the same-mesh peer to join")
    time.sleep(2.5)  # a few heartbeat rounds in which the other mesh keeps knocking
    assert ours.peer_names() == {"friend"}
    assert theirs.peer_names() == set()
    assert friend.peer_names() == {"ours"}


def test_other_mesh_announcement_ignored_over_mdns(node_factory) -> None:  # type: ignore[no-untyped-def]
    a = node_factory("mdns-a", "--roles", "cache,replica", "--mdns-interface", "127.0.0.1")
    b = node_factory("mdns-b", "--roles", "cache,replica", "--mdns-interface", "127.0.0.1")
    other = node_factory(
        "mdns-other", "--roles", "cache,replica", "--mdns-interface", "127.0.0.1", secret="yet-another-secret-1"
    )
    wait_until(
        lambda: a.peer_names() == {"mdns-b"} and b.peer_names() == {"mdns-a"}, 20, what="same-mesh zeroconf discovery"
    )
    time.sleep(2.5)
    assert "mdns-other" not in a.peer_names() | b.peer_names()
    assert other.peer_names() == set()


async def test_method_table_checks_the_secret_on_every_call_without_interceptors() -> None:
    """The node's one generic handler: named methods need the secret, health stays open, unknown is UNIMPLEMENTED."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from llmlab_grpc.mesh.method_table import MethodTable

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def stream(request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        yield request

    table = MethodTable("s3cret")
    table.add("/t.Echo/Echo", grpc.unary_unary_rpc_method_handler(echo))
    table.add("/t.Echo/Stream", grpc.unary_stream_rpc_method_handler(stream))
    table.add_servicer(health_pb2_grpc.add_HealthServicer_to_server, health.aio.HealthServicer())
    with pytest.raises(ValueError, match="twice"):
        table.add("/t.Echo/Echo", grpc.unary_unary_rpc_method_handler(echo))
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((table,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/t.Echo/Echo")
            assert await call(b"hi", metadata=(("authorization", "Bearer s3cret"),)) == b"hi"
            for metadata, words in ((None, "missing"), ((("authorization", ""),), "missing"),
                                    ((("authorization", "Bearer s3cret!"),), "wrong"),
                                    ((("authorization", "s3cret"),), "wrong")):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call(b"hi", metadata=metadata)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert words in refused.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as streamed:
                [m async for m in channel.unary_stream("/t.Echo/Stream")(b"x")]
            assert streamed.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await channel.unary_unary("/t.Echo/Invented")(b"x", metadata=(("authorization", "Bearer s3cret"),))
            assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(None)
