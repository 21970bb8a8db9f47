"""Where a tool call runs: here if this node has the tool, else on the least busy live peer.

``ToolRouter.execute(tool, arguments, task_id)`` is the one entry point, used by the
``ToolExecutor`` service and by the planner inside a node. Candidates are ranked and
failed over by the one peer-call policy (``mesh/peer_calls.py``): alive before suspect,
then by the peer's reported ``NodeLoad.tools_running`` or the calls this router has in
flight to it if more (heartbeat load is up to a second old), then by name. A candidate
that fails with a retryable code (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED:
dead, unreachable, stopped, overloaded, or a bridge that lost its phone) is recorded in
``failed_over`` and the next is tried; one that no longer has the tool (NOT_FOUND) is
skipped without a record. Forwarded calls carry ``local_only=True`` and the target's node id, so a
call is never forwarded twice and never runs on a node that took over a dead peer's
address.

Mobile nodes are reached through the bridge node they are paired with
(``NodeInfo.via_node_id``): the router calls that node's ``Execute`` with
``target_node_id`` set to the mobile node, or, on the bridge itself, the bridge
component's ``execute_on_mobile`` (the ``ports.MobileTools`` the node hands the router).
The router is the one writer of the node's ``tools_running`` load counter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.struct_pb2 import Struct

from llmlab_grpc.mesh.peer_calls import (
    RETRYABLE_NAMES,
    Candidate,
    PeerCallError,
    PeerCalls,
    Retry,
    peer_candidate,
    retryable,
)
from llmlab_grpc.mesh.peers import PeerRecord
from llmlab_grpc.proto.llmlab.v1 import common_pb2, tool_executor_pb2, tool_executor_pb2_grpc
from llmlab_grpc.tools.base import InvalidArguments, ToolFailure, ToolOutcome
from llmlab_grpc.tools.catalog import ToolCatalog
from llmlab_grpc.tools.convert import from_struct, to_struct
from llmlab_grpc.tools.registry import ToolNotFound, ToolRegistry

if TYPE_CHECKING:
    from llmlab_grpc.ports import Channels, Gauge, LocalNode, MobileTools, PeersView, Slot


DEFAULT_REMOTE_TIMEOUT_S = 60.0
"""Deadline of a forwarded call when no node has told us the tool's own timeout."""
FORWARD_MARGIN_S = 5.0
"""Added to the tool's timeout for a forwarded call, so the tool's own TIMEOUT answer wins the race."""


class RoutingFailure(ToolFailure):
    """The call cannot be placed; ``code`` is a gRPC status name (UNAVAILABLE, FAILED_PRECONDITION)."""


def _is_mobile(record: PeerRecord) -> bool:
    return record.info.kind == common_pb2.NODE_KIND_MOBILE


def response_from_outcome(tool: str, outcome: ToolOutcome, node_id: str, node_name: str
                          ) -> tool_executor_pb2.ExecuteResponse:
    """The ExecuteResponse of a tool that ran (successfully or not) on ``node_id``."""
    response = tool_executor_pb2.ExecuteResponse(
        tool=tool, node_id=node_id, node_name=node_name, duration_ms=outcome.duration_ms,
        attachments=[common_pb2.Attachment(name=n, mime_type=m, data=d) for n, m, d in outcome.attachments],
    )
    if outcome.error is not None:
        response.error.CopyFrom(common_pb2.ToolError(code=outcome.error.code, message=outcome.error.message))
    else:
        response.result.CopyFrom(to_struct(outcome.result))
    return response


class ToolRouter:
    """Runs tool calls on the right node of the mesh."""

    def __init__(self, me: LocalNode, peers: PeersView, channels: Channels, registry: ToolRegistry,
                 catalog: ToolCatalog, mobile: Slot[MobileTools], running: Gauge, heartbeat_interval_s: float
                 ) -> None:
        self.me = me
        self.peers = peers
        self.channels = channels
        self.registry = registry
        self.catalog = catalog
        self.mobile = mobile
        self.running = running
        self.heartbeat_interval_s = heartbeat_interval_s
        self.policy = PeerCalls("node")

    async def execute(
        self,
        tool: str,
        arguments: Mapping[str, Any] | Struct | None = None,
        task_id: str = "",
        *,
        target_node_id: str = "",
        local_only: bool = False,
        timeout_s: float | None = None,
    ) -> tool_executor_pb2.ExecuteResponse:
        """Run ``tool`` somewhere in the mesh and return its response.

        A tool that ran and failed (bad expression, page timeout, ...) is a response with
        ``error`` set; when every node that has the tool is unreachable the response has
        ``error.code == "UNAVAILABLE"`` and ``failed_over`` lists them. Raises
        ``ToolNotFound`` when no live node has the tool (or the named target is unknown),
        ``InvalidArguments`` when the arguments do not fit the tool's input schema, and
        ``RoutingFailure`` for a ``local_only`` call this node cannot serve.

        ``timeout_s`` bounds a forwarded call (default: the tool's timeout plus a margin).
        """
        if not tool:
            raise InvalidArguments("the tool name is empty")
        args = from_struct(arguments) if isinstance(arguments, Struct) else dict(arguments or {})
        me = self.me.node_id
        if target_node_id and target_node_id != me:
            return await self._to_target(tool, args, task_id, target_node_id, local_only, timeout_s)
        if tool in self.registry:
            return await self._run_here(tool, args)
        if local_only or target_node_id == me:
            raise ToolNotFound(f"node {self.me.name} has no tool {tool!r}; it has: "
                               f"{', '.join(self.registry.names()) or 'none'}")
        records = self._usable(tool)
        if not records:
            raise ToolNotFound(f"no live node has a tool named {tool!r}; tools in the mesh: "
                               f"{', '.join(self.known_tools()) or 'none'}")
        return await self._call(records, tool, args, task_id, timeout_s, f"every node with tool {tool!r} failed")

    # -- choosing ------------------------------------------------------------------------------

    def _usable(self, tool: str) -> dict[str, PeerRecord]:
        return {r.node_id: r for r in self.peers.with_tool(tool) if self._reachable(r)}

    def _candidates(self, records: dict[str, PeerRecord]) -> list[Candidate]:
        now = time.monotonic()
        interval = self.heartbeat_interval_s
        return [peer_candidate(r, r.load.tools_running, interval_s=interval, now=now) for r in records.values()]

    def candidates(self, tool: str) -> list[Candidate]:
        """Live peers that have ``tool`` and can be reached, best first (the peer-call policy's rank)."""
        return self.policy.rank(self._candidates(self._usable(tool)))

    def _reachable(self, record: PeerRecord) -> bool:
        if not _is_mobile(record):
            return bool(record.address)
        via = record.info.via_node_id
        if via == self.me.node_id:
            return True
        bridge = self.peers.get(via)
        return bridge is not None and bool(bridge.address)

    def known_tools(self) -> list[str]:
        """Names of every tool this node or a live peer announces."""
        names = set(self.registry.names())
        for record in self.peers.all():
            names.update(record.info.tools)
        return sorted(names)

    # -- running ---------------------------------------------------------------------------------

    async def _run_here(self, tool: str, args: dict[str, Any]) -> tool_executor_pb2.ExecuteResponse:
        with self.running.counting():
            outcome = await self.registry.run(tool, args)
        return response_from_outcome(tool, outcome, self.me.node_id, self.me.name)

    async def _to_target(self, tool: str, args: dict[str, Any], task_id: str, target: str, local_only: bool,
                         timeout_s: float | None) -> tool_executor_pb2.ExecuteResponse:
        record = self.peers.get(target)
        if record is None:
            raise ToolNotFound(f"no live node {target!r} in the mesh (see `llmlab peers`)")
        if tool not in record.info.tools:
            raise ToolNotFound(f"node {record.info.name} has no tool {tool!r}; it has: "
                               f"{', '.join(record.info.tools) or 'none'}")
        if local_only and not (_is_mobile(record) and record.info.via_node_id == self.me.node_id):
            # A forwarded call that reached the wrong node (e.g. one that took over a dead peer's port).
            raise RoutingFailure("UNAVAILABLE", f"this is node {self.me.node_id}, not {target}, and it does "
                                                f"not bridge {target}")
        return await self._call({record.node_id: record}, tool, args, task_id, timeout_s,
                                f"node {record.info.name} could not run {tool!r}")

    async def _call(self, records: dict[str, PeerRecord], tool: str, args: dict[str, Any], task_id: str,
                    timeout_s: float | None, failure: str) -> tool_executor_pb2.ExecuteResponse:
        """Run the call on the best of ``records``, failing over by the peer-call policy."""
        try:
            response, _, failed = await self.policy.call(
                self._candidates(records),
                lambda c: self._attempt(records[c.node_id], tool, args, task_id, timeout_s))
        except PeerCallError as exc:  # every candidate failed (the others are answers, made in _forward)
            why = exc.tried() or f"no node has tool {tool!r} any more"
            return self._unavailable(tool, f"{failure}: {why}", [f.node_id for f in exc.failed_over])
        del response.failed_over[:]
        response.failed_over.extend(f.node_id for f in failed)
        return response

    def _deadline(self, tool: str, timeout_s: float | None) -> float:
        if timeout_s is not None:
            return timeout_s
        own = self.catalog.timeout_s(tool)
        return (own if own is not None else DEFAULT_REMOTE_TIMEOUT_S) + FORWARD_MARGIN_S

    async def _attempt(self, record: PeerRecord, tool: str, args: dict[str, Any], task_id: str,
                       timeout_s: float | None) -> tool_executor_pb2.ExecuteResponse:
        """One try on one candidate; raises ``Retry`` or a retryable RPC error when the next should be tried."""
        deadline = self._deadline(tool, timeout_s)
        if _is_mobile(record) and record.info.via_node_id == self.me.node_id:
            return await self._on_bridged_mobile(record, tool, args, timeout_s)
        address = record.address
        if _is_mobile(record):
            bridge = self.peers.get(record.info.via_node_id)
            if bridge is None or not bridge.address:
                raise Retry(f"its bridge node {record.info.via_node_id} is not in the peer table")
            address = bridge.address
        return await self._forward(address, record, tool, args, task_id, deadline)

    async def _forward(self, address: str, record: PeerRecord, tool: str, args: dict[str, Any], task_id: str,
                       deadline: float) -> tool_executor_pb2.ExecuteResponse:
        request = tool_executor_pb2.ExecuteRequest(
            tool=tool, arguments=to_struct(args), local_only=True, task_id=task_id, target_node_id=record.node_id,
        )
        stub = tool_executor_pb2_grpc.ToolExecutorStub(self.channels.get(address))
        try:
            response: tool_executor_pb2.ExecuteResponse = await stub.Execute(request, timeout=deadline)
        except grpc.aio.AioRpcError as err:
            code, details = err.code(), err.details() or ""
            if retryable(err):
                raise
            if code == grpc.StatusCode.NOT_FOUND:  # the tool left that node since its last heartbeat
                raise Retry(f"NOT_FOUND: {details}", code, record=False) from None
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArguments(details) from None
            response = tool_executor_pb2.ExecuteResponse(
                tool=tool, node_id=record.node_id, node_name=record.info.name,
                error=common_pb2.ToolError(code="FAILED", message=f"node {record.info.name} answered "
                                                                  f"{code.name}: {details}"),
            )
            return response
        if response.HasField("error") and response.error.code in RETRYABLE_NAMES:
            raise Retry(f"{response.error.code}: {response.error.message}", grpc.StatusCode[response.error.code])
        return response

    async def _on_bridged_mobile(self, record: PeerRecord, tool: str, args: dict[str, Any],
                                 timeout_s: float | None) -> tool_executor_pb2.ExecuteResponse:
        mobile = self.mobile.get()
        if mobile is None:
            raise Retry(f"this node has no bridge to reach mobile node {record.info.name}")
        own = timeout_s if timeout_s is not None else self.catalog.timeout_s(tool)
        try:
            # 0 lets the bridge use the timeout the device published for the tool.
            outcome = await asyncio.wait_for(
                mobile.execute_on_mobile(record.node_id, tool, args, own or 0.0),
                timeout=(own or DEFAULT_REMOTE_TIMEOUT_S) + FORWARD_MARGIN_S,
            )
        except InvalidArguments:
            raise
        except TimeoutError:
            raise Retry(f"mobile node {record.info.name} did not answer in time",
                        grpc.StatusCode.DEADLINE_EXCEEDED) from None
        except ToolFailure as exc:
            if exc.code in RETRYABLE_NAMES:
                raise Retry(f"{exc.code}: {exc.message}", grpc.StatusCode[exc.code]) from None
            outcome = ToolOutcome(error=exc)
        return response_from_outcome(tool, outcome, record.node_id, record.info.name)

    def _unavailable(self, tool: str, message: str, failed: list[str]) -> tool_executor_pb2.ExecuteResponse:
        return tool_executor_pb2.ExecuteResponse(
            tool=tool, error=common_pb2.ToolError(code="UNAVAILABLE", message=message), failed_over=failed,
        )
