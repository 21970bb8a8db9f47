"""The ``Planner`` gRPC service and the ``planner`` role."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc

from llmlab_grpc.planner.planner import Planner, QueryError, TaskFailed
from llmlab_grpc.planner.tasks import MAX_TASKS
from llmlab_grpc.proto.llmlab.v1 import planner_pb2, planner_pb2_grpc
from llmlab_grpc.roles import RoleComponent, ServiceBinding

log = logging.getLogger(__name__)
DEFAULT_LIST_LIMIT = 20


class PlannerService(planner_pb2_grpc.PlannerServicer):
    """Answers queries through the node's ``Planner``."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner

    async def Ask(
        self, request: planner_pb2.AskRequest,
        context: grpc.aio.ServicerContext[planner_pb2.AskRequest, planner_pb2.AskResponse],
    ) -> planner_pb2.AskResponse:
        response = planner_pb2.AskResponse()
        try:  # no listener: no stream events are made; the task is built in the reply, not copied into it
            task, status = await self.planner.ask(request.query, into=response.task)
        except QueryError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if status is not None:
            failed = TaskFailed(task, status)
            await context.abort(failed.code, failed.message)
        return response

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
                               PlannerService(self.planner), planner_pb2_grpc.add_PlannerServicer_to_server)]

