"""The ``ToolExecutor`` gRPC service: a thin mapping from RPCs to the catalog and the router.

Status codes: an empty or unknown tool is NOT_FOUND (with the tools that do exist),
arguments that do not fit the tool's schema are INVALID_ARGUMENT (with the validation
message), a ``local_only`` call that reached the wrong node is UNAVAILABLE (the caller
fails over). A tool that ran and failed is an OK response with ``error`` set. Nothing a
client sends can make this service raise: an unexpected bug is INTERNAL with its type.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import grpc

from llmlab_grpc.proto.llmlab.v1 import tool_executor_pb2, tool_executor_pb2_grpc
from llmlab_grpc.tools.base import InvalidArguments, ToolFailure
from llmlab_grpc.tools.catalog import ToolCatalog
from llmlab_grpc.tools.registry import ToolNotFound
from llmlab_grpc.tools.router import ToolRouter

if TYPE_CHECKING:
    from llmlab_grpc.ports import Gauge

log = logging.getLogger(__name__)

_STATUS = {
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
}


class ToolExecutorService(tool_executor_pb2_grpc.ToolExecutorServicer):
    """ListTools and Execute for one node; ``calls`` (the node's ``tool_calls`` load counter) is written only here."""

    def __init__(self, router: ToolRouter, catalog: ToolCatalog, calls: Gauge) -> None:
        self.calls = calls
        self.router = router
        self.catalog = catalog

    async def ListTools(
        self, request: tool_executor_pb2.ListToolsRequest,
        context: grpc.aio.ServicerContext[tool_executor_pb2.ListToolsRequest, tool_executor_pb2.ListToolsResponse],
    ) -> tool_executor_pb2.ListToolsResponse:
        if request.local_only:
            specs = self.catalog.own_specs(request.capability)
        else:
            specs = await self.catalog.mesh_specs(request.capability)
        return tool_executor_pb2.ListToolsResponse(tools=specs)

    async def Execute(
        self, request: tool_executor_pb2.ExecuteRequest,
        context: grpc.aio.ServicerContext[tool_executor_pb2.ExecuteRequest, tool_executor_pb2.ExecuteResponse],
    ) -> tool_executor_pb2.ExecuteResponse:
        with self.calls.counting():
            status, response = await self._execute(request)
        if status is not None:
            await context.abort(*status)
        assert response is not None
        return response

    async def _execute(self, request: tool_executor_pb2.ExecuteRequest
                       ) -> tuple[tuple[grpc.StatusCode, str] | None, tool_executor_pb2.ExecuteResponse | None]:
        if not request.tool:
            return (grpc.StatusCode.INVALID_ARGUMENT, "ExecuteRequest.tool is empty; list the tools with "
                                                      "ListTools (`llmlab tools`)"), None
        try:
            response = await self.router.execute(
                request.tool, request.arguments, request.task_id,
                target_node_id=request.target_node_id, local_only=request.local_only,
            )
        except ToolNotFound as exc:
            return (grpc.StatusCode.NOT_FOUND, exc.message), None
        except InvalidArguments as exc:
            return (grpc.StatusCode.INVALID_ARGUMENT, exc.message), None
        except ToolFailure as exc:
            return (_STATUS.get(exc.code, grpc.StatusCode.FAILED_PRECONDITION), exc.message), None
        except Exception as exc:
            log.exception("Execute %s failed unexpectedly", request.tool)
            return (grpc.StatusCode.INTERNAL, f"executing {request.tool} failed unexpectedly: "
                                              f"{type(exc).__name__}: {exc}"), None
        return None, response
