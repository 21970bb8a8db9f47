"""The way from an HTTP request to a planner, and the mesh's models.

``PlannerGateway.events(query, deadline)`` yields the planner's ``AskStreamResponse``
events, ending with ``final`` (the task), and raises ``ApiError`` when the task failed
or the deadline passed. It uses this node's planner when the node has the role, else
``Planner.AskStream`` on a planner peer (failing over by the peer-call policy while no
event was received), so
a bridge-only node serves the API as well. Closing the generator early (the client
went away) cancels the work: a generation nobody reads stops. The node hands it the mesh
(``MeshCalls``) and this node's planner when it has the role (``ports.LocalPlanner``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import grpc

from llmlab_grpc.mesh.peer_calls import PeerCallError
from llmlab_grpc.openai_api.errors import ApiError, deadline
from llmlab_grpc.planner.hit_wire import WrittenHit
from llmlab_grpc.planner.mesh_calls import MeshCalls
from llmlab_grpc.planner.planner import QueryError, TaskFailed
from llmlab_grpc.proto.llmlab.v1 import inference_pb2, inference_pb2_grpc, planner_pb2, planner_pb2_grpc

if TYPE_CHECKING:
    from llmlab_grpc.ports import LocalPlanner

LIST_MODELS_TIMEOUT_S = 2.0


class PlannerGateway:
    """Planner access and model listing for the ``/v1`` routes of one node."""

    def __init__(self, calls: MeshCalls, planner: LocalPlanner | None) -> None:
        self.calls = calls
        self.planner = planner

    # -- models -----------------------------------------------------------------------
    def model_names(self) -> list[str]:
        """Models of this node and of every live llm peer, from the peer table (no calls)."""
        return self.calls.models()

    async def model_details(self) -> dict[str, list[dict[str, Any]]]:
        """model → the nodes serving it, asked with ``Inference.ListModels`` (peer table on failure)."""
        targets = [(c.node_id, c.name, c.address) for c in self.calls.candidates("llm")]

        async def ask(node_id: str, name: str, address: str) -> list[dict[str, Any]]:
            stub = inference_pb2_grpc.InferenceStub(self.calls.channels.get(address))
            try:
                reply = await stub.ListModels(inference_pb2.ListModelsRequest(), timeout=LIST_MODELS_TIMEOUT_S)
            except grpc.aio.AioRpcError:
                known = self.calls.me.models if node_id == self.calls.me.node_id else (
                    p.info.models if (p := self.calls.peers.get(node_id)) else [])
                return [{"model": m, "node_id": node_id, "node_name": name} for m in known]
            return [{"model": m.name, "node_id": node_id, "node_name": name, "backend": m.backend,
                     "context_length": m.context_length, "loaded": m.loaded} for m in reply.models]

        found: dict[str, list[dict[str, Any]]] = {}
        for rows in await asyncio.gather(*(ask(*t) for t in targets)):
            for row in rows:
                found.setdefault(row.pop("model"), []).append(row)
        return found

    # -- planning ---------------------------------------------------------------------
    async def events(self, query: planner_pb2.Query, timeout_s: float
                     ) -> AsyncGenerator[planner_pb2.AskStreamResponse, None]:
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout_s
        source = (self._local(self.planner, query, until, timeout_s) if self.planner is not None
                  else self._remote(query, until, timeout_s))
        async for event in source:
            yield event

    async def answer(self, query: planner_pb2.Query, timeout_s: float, request: bytes | None = None
                     ) -> planner_pb2.Task | WrittenHit:
        """The finished task of a non-streamed request (or an exact cache hit of this node's
        planner as it was written: ``hit_wire.WrittenHit``), or ``ApiError``. ``request``: the
        bytes of an ``AskRequest`` holding ``query``, when the caller has them (they key the
        planner's memo of the query, as ``Planner.Ask``'s do).

        With a planner here this is ``Planner.ask_written``: a cache hit then makes no
        stream events, no queue and no extra task (half the work of a /v1 hit); the caller
        bounds it by ``timeout_s`` (``watch.until_answered``: a timer armed only once the
        answer waits costs a hit nothing). Otherwise the planner peer's stream, bounded here,
        keeping its final task.
        """
        if self.planner is None:
            task = None
            events = self.events(query, timeout_s)
            try:
                async for event in events:
                    if event.WhichOneof("event") == "final":
                        task = event.final
            finally:
                await events.aclose()
            if task is None:  # pragma: no cover - the gateway always ends with final or raises
                raise ApiError(500, "the planner ended without a task", "server_error", "internal_error")
            return task
        try:
            answered, status = await self.planner.ask_written(query, request)
        except QueryError as exc:
            raise ApiError.from_grpc(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        if status is not None:
            assert isinstance(answered, planner_pb2.Task)  # a written hit has no status
            failed = TaskFailed(answered, status)
            raise ApiError.from_grpc(failed.code, failed.message)
        return answered

    async def _local(self, planner: LocalPlanner, query: planner_pb2.Query, until: float, timeout_s: float
                     ) -> AsyncGenerator[planner_pb2.AskStreamResponse, None]:
        """This node's planner stream, each wait for an event bounded by the request's deadline."""
        loop = asyncio.get_running_loop()
        events = planner.stream(query)
        try:
            while True:
                try:
                    event = await asyncio.wait_for(anext(events), max(0.0, until - loop.time()))
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise deadline(timeout_s) from None
                except QueryError as exc:
                    raise ApiError.from_grpc(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
                except TaskFailed as exc:
                    raise ApiError.from_grpc(exc.code, exc.message) from exc
                yield event
        finally:
            await events.aclose()

    async def _remote(self, query: planner_pb2.Query, until: float, timeout_s: float
                      ) -> AsyncGenerator[planner_pb2.AskStreamResponse, None]:
        """A planner peer's stream, failed over (``mesh/peer_calls.py``) while no event has come."""
        loop = asyncio.get_running_loop()
        candidates = self.calls.candidates("planner")
        if not candidates:
            raise ApiError(503, "no planner node is alive in the mesh: start a node with the planner role",
                           "server_error", "no_planner_node", headers={"retry-after": "2"})
        request = planner_pb2.AskStreamRequest(query=query)
        stream = self.calls.policy.stream(
            candidates, lambda c: planner_pb2_grpc.PlannerStub(self.calls.channels.get(c.address)).AskStream(
                request, timeout=max(0.001, until - loop.time())),
            until=until, first="event", what="planner node")
        try:
            async with contextlib.aclosing(stream):  # the client went away: the planner's work stops now
                async for _, event in stream:
                    yield event
        except PeerCallError as exc:
            if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED and loop.time() >= until:
                raise deadline(timeout_s) from exc
            if exc.exhausted:
                raise ApiError.from_grpc(exc.code, f"no planner node could take the request: {exc.tried()}") from exc
            where = f" (planner {exc.candidate.name})" if exc.candidate is not None else ""
            raise ApiError.from_grpc(exc.code, f"{exc.details}{where}") from exc
