"""The ``Planner`` gRPC service and the ``planner`` role."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from llmlab_grpc.cache.wire import varint
from llmlab_grpc.mesh.bytes_methods import BytesMethods
from llmlab_grpc.planner.planner import Planner, QueryError, TaskFailed
from llmlab_grpc.planner.tasks import MAX_TASKS
from llmlab_grpc.proto.llmlab.v1 import planner_pb2, planner_pb2_grpc
from llmlab_grpc.roles import RoleComponent, ServiceBinding

log = logging.getLogger(__name__)
DEFAULT_LIST_LIMIT = 20


_TASK_TAG = b"\x0a"  # AskResponse.task: field 1, length-delimited




def ask_response_of(encoded_task: bytes) -> bytes:
    """``AskResponse(task=Task.FromString(encoded_task)).SerializeToString()``, without the messages."""
    return _TASK_TAG + varint(len(encoded_task)) + encoded_task


class PlannerService(planner_pb2_grpc.PlannerServicer):
    """Answers queries through the node's ``Planner``."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner

    async def Ask(
        self, request: planner_pb2.AskRequest,
        context: grpc.aio.ServicerContext[planner_pb2.AskRequest, planner_pb2.AskResponse],
    ) -> planner_pb2.AskResponse:
        try:
            task, status = await self.planner.ask(request.query)  # no listener: no stream events are made
        except QueryError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if status is not None:
            failed = TaskFailed(task, status)
            await context.abort(failed.code, failed.message)
        return planner_pb2.AskResponse(task=task)

    async def ask_wire(self, raw: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        """``Ask`` as the node serves it (``add_to_server``): the request and the reply as bytes.

        The same answer and status codes as ``Ask``; the request's bytes key the planner's memo
        of the query (``Planner.ask_encoded``), and the reply is the task encoded once (the task
        store keeps and counts the same bytes; an exact cache hit's task is only ever bytes,
        written from a template: ``planner/hit_wire.py``) inside an ``AskResponse`` written by
        hand: field 1, length, bytes, exactly what ``AskResponse(task=task).SerializeToString()`` gives.
        """
        try:
            request = planner_pb2.AskRequest.FromString(raw)
        except DecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not an AskRequest ({exc})")
        try:
            task, status, encoded = await self.planner.ask_encoded(request.query, raw)
        except QueryError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if status is not None:
            assert task is not None  # only a hit comes without its task, and a hit has no status
            failed = TaskFailed(task, status)
            await context.abort(failed.code, failed.message)
        return ask_response_of(encoded)

    async def AskStream(
        self, request: planner_pb2.AskStreamRequest,
        context: grpc.aio.ServicerContext[planner_pb2.AskStreamRequest, planner_pb2.AskStreamResponse],
    ) -> AsyncIterator[planner_pb2.AskStreamResponse]:
        try:
            async for event in self.planner.stream(request.query):
                yield event
        except QueryError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except TaskFailed as exc:
            await context.abort(exc.code, exc.message)

    async def GetTask(
        self, request: planner_pb2.GetTaskRequest,
        context: grpc.aio.ServicerContext[planner_pb2.GetTaskRequest, planner_pb2.GetTaskResponse],
    ) -> planner_pb2.GetTaskResponse:
        if not request.task_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "task_id is empty")
        task = self.planner.store.get(request.task_id)
        if task is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no task {request.task_id!r} on this planner (it keeps the newest {MAX_TASKS})")
        return planner_pb2.GetTaskResponse(task=task)

    async def ListTasks(
        self, request: planner_pb2.ListTasksRequest,
        context: grpc.aio.ServicerContext[planner_pb2.ListTasksRequest, planner_pb2.ListTasksResponse],
    ) -> planner_pb2.ListTasksResponse:
        """One page of tasks, newest first: ``page_size`` (else ``limit``, else 20) tasks at most, and
        never more bytes than ``tasks.PAGE_MAX_BYTES``; ``next_page_token`` leads on."""
        for name, value in (("limit", request.limit), ("page_size", request.page_size)):
            if value < 0 or value > MAX_TASKS:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name} must be between 0 and {MAX_TASKS}")
        size = request.page_size or request.limit or DEFAULT_LIST_LIMIT
        try:
            tasks, token = self.planner.store.page(size, request.page_token)
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "page_token is not one this planner gave: pass next_page_token as it came, or none")
        return planner_pb2.ListTasksResponse(tasks=tasks, next_page_token=token)


class PlannerComponent(RoleComponent):
    """The ``planner`` role: a Planner (built by the node from its ports) and its gRPC service."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner

    def bindings(self) -> list[ServiceBinding]:
        return [ServiceBinding(planner_pb2.DESCRIPTOR.services_by_name["Planner"].full_name,
                               PlannerService(self.planner), add_to_server)]


def add_to_server(servicer: PlannerService, server: Any) -> None:
    """``add_PlannerServicer_to_server``, with ``Ask`` served by ``ask_wire`` (bytes in, bytes out).

    The generated code stays the one list of the service's methods; only ``Ask``'s handler is
    swapped as it is registered (the node's method table still checks the secret and counts it).
    """
    add: Callable[[Any, Any], None] = planner_pb2_grpc.add_PlannerServicer_to_server  # takes any registrar
    add(servicer, BytesMethods(server, {"Ask": servicer.ask_wire}))


