"""Contracts: generated code is fresh, reflection shows every service, every RPC has a handler."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.proto.llmlab.v1 import (
    cache_pb2,
    inference_pb2,
    node_pb2,
    planner_pb2,
    replica_pb2,
    tool_executor_pb2,
)

ROOT = Path(__file__).resolve().parent.parent
SERVICE_MODULES = [node_pb2, planner_pb2, tool_executor_pb2, cache_pb2, replica_pb2, inference_pb2]
ALL_SERVICES = {svc.full_name for m in SERVICE_MODULES for svc in m.DESCRIPTOR.services_by_name.values()}


def test_generated_code_is_fresh() -> None:
    result = subprocess.run([sys.executable, "scripts/gen_protos", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_proto_file_is_generated() -> None:
    protos = {p.stem for p in (ROOT / "protos" / "llmlab" / "v1").glob("*.proto")}
    generated = {p.name.removesuffix("_pb2.py") for p in (ROOT / "llmlab_grpc/proto/llmlab/v1").glob("*_pb2.py")}
    assert protos == generated


@pytest.fixture
def full_node(node_factory):  # type: ignore[no-untyped-def]
    return node_factory("full", "--no-mdns")


def test_reflection_lists_every_llmlab_service(full_node) -> None:  # type: ignore[no-untyped-def]
    assert {
        "llmlab.v1.Node", "llmlab.v1.Planner", "llmlab.v1.ToolExecutor",
        "llmlab.v1.Cache", "llmlab.v1.Replica", "llmlab.v1.Inference",
    } == ALL_SERVICES
    with grpc.insecure_channel(full_node.address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert services >= ALL_SERVICES
    assert "grpc.health.v1.Health" in services


def test_health_is_serving_without_a_token(full_node) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(full_node.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ["", *sorted(ALL_SERVICES)]:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


def _call_empty(channel: grpc.Channel, service: str, method, secret: str) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    """Invoke ``method`` with an empty request; return the status code (OK when it answered)."""
    path = f"/{service}/{method.name}"
    request_cls = _message_class(method.input_type)
    response_cls = _message_class(method.output_type)
    kwargs = {"request_serializer": request_cls.SerializeToString, "response_deserializer": response_cls.FromString}
    try:
        if method.client_streaming:
            call = channel.stream_unary(path, **kwargs)
            call(iter([]), metadata=bearer(secret), timeout=10)
        elif method.server_streaming:
            for _ in channel.unary_stream(path, **kwargs)(request_cls(), metadata=bearer(secret), timeout=10):
                break
        else:
            channel.unary_unary(path, **kwargs)(request_cls(), metadata=bearer(secret), timeout=10)
    except grpc.RpcError as err:
        assert err.details() != "Method not found!", f"{path} has no server handler"
        return err.code()
    return grpc.StatusCode.OK


def _message_class(descriptor):  # type: ignore[no-untyped-def]
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


def test_every_declared_rpc_has_a_server_method(full_node, secret) -> None:  # type: ignore[no-untyped-def]
    """An empty request may be refused (INVALID_ARGUMENT...), but never for want of a handler."""
    with grpc.insecure_channel(full_node.address) as channel:
        for module in SERVICE_MODULES:
            for service in module.DESCRIPTOR.services_by_name.values():
                for method in service.methods:
                    code = _call_empty(channel, service.full_name, method, secret)
                    assert code != grpc.StatusCode.UNAUTHENTICATED, f"{service.name}.{method.name}"
                    assert code != grpc.StatusCode.UNKNOWN, f"{service.name}.{method.name} crashed on an empty request"
