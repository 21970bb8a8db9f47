"""``ToolExecutor`` for a bridge node without the ``tools`` role: runs its mobile nodes' tools.

Routers on other nodes reach a mobile node by calling ``Execute`` on the bridge it is
paired with (``target_node_id`` = the mobile node). A node that has the ``tools`` role
serves the full ToolExecutor (which calls ``BridgeComponent.execute_on_mobile``); this
smaller servicer stands in when it does not, so a bridge-only node still carries tasks.
"""

from __future__ import annotations

import grpc

from llmlab_grpc.bridge.hub import MobileHub
from llmlab_grpc.mesh.peer_calls import RETRYABLE_NAMES, Candidate, PeerCallError, PeerCalls, Retry
from llmlab_grpc.proto.llmlab.v1 import common_pb2, tool_executor_pb2, tool_executor_pb2_grpc
from llmlab_grpc.tools.base import InvalidArguments, ToolFailure, ToolOutcome
from llmlab_grpc.tools.convert import from_struct, to_struct


class MobileToolExecutor(tool_executor_pb2_grpc.ToolExecutorServicer):
    """Lists and runs the tools of the mobile nodes paired with this bridge."""

    def __init__(self, hub: MobileHub) -> None:
        self.hub = hub
        self.policy = PeerCalls("mobile node")
        """Ranks the phones (least busy, then name) and fails over on the one set of retryable codes."""

    async def ListTools(
        self, request: tool_executor_pb2.ListToolsRequest,
        context: grpc.aio.ServicerContext[tool_executor_pb2.ListToolsRequest, tool_executor_pb2.ListToolsResponse],
    ) -> tool_executor_pb2.ListToolsResponse:
        specs = [s for s in self.hub.tool_specs() if not request.capability or request.capability in s.capabilities]
        return tool_executor_pb2.ListToolsResponse(tools=specs)

    async def Execute(
        self, request: tool_executor_pb2.ExecuteRequest,
        context: grpc.aio.ServicerContext[tool_executor_pb2.ExecuteRequest, tool_executor_pb2.ExecuteResponse],
    ) -> tool_executor_pb2.ExecuteResponse:
        if not request.tool:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ExecuteRequest.tool is empty")
        if request.target_node_id:
            candidates = [Candidate(request.target_node_id, request.target_node_id)]
        else:
            candidates = [Candidate(s.node_id, s.name, busy=s.busy) for s in self.hub.sessions.values()
                          if request.tool in s.specs]
        if not candidates:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no mobile node of bridge "
                                f"{self.hub.me.name} offers tool {request.tool!r}, and this node has "
                                "no tools role; ask a node with the tools role")
        timeout = context.time_remaining()
        arguments = from_struct(request.arguments)

        async def attempt(cand: Candidate) -> ToolOutcome:
            try:
                return await self.hub.execute(cand.node_id, request.tool, arguments,
                                              min(timeout, 60.0) if timeout is not None else 0.0)
            except InvalidArguments:
                raise
            except ToolFailure as exc:
                if exc.code not in RETRYABLE_NAMES:
                    raise
                raise Retry(exc.message, grpc.StatusCode[exc.code]) from None

        try:
            outcome, cand, failed = await self.policy.call(candidates, attempt)
        except InvalidArguments as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
            raise AssertionError("unreachable") from None  # pragma: no cover
        except PeerCallError as exc:
            last = exc.failed_over[-1].why if exc.failed_over else ""
            await context.abort(grpc.StatusCode.UNAVAILABLE, last or f"no mobile node could run {request.tool}")
            raise AssertionError("unreachable") from None  # pragma: no cover
        session = self.hub.sessions.get(cand.node_id)
        response = tool_executor_pb2.ExecuteResponse(
            tool=request.tool, node_id=cand.node_id, node_name=session.name if session else cand.node_id,
            duration_ms=outcome.duration_ms, failed_over=[f.node_id for f in failed],
        )
        if outcome.error is not None:
            response.error.CopyFrom(common_pb2.ToolError(code=outcome.error.code, message=outcome.error.message))
        else:
            response.result.CopyFrom(to_struct(outcome.result))
        return response
