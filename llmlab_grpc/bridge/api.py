"""The read-only JSON status API behind the dashboard: ``/api/nodes|tasks|cache|tools|pairing``.

Who may read it is decided by ``bridge.access.Access``: a client on this machine (a
loopback address *and* a loopback ``Host``, through no proxy), a dashboard session
cookie, or the mesh secret as ``Authorization: Bearer <secret>``. Everything else gets
401: task texts, node addresses and above all the pairing token are not for the whole
LAN. ``POST /api/dashboard-link`` (secret or this machine only) mints a one-time
dashboard link for a browser elsewhere.

Tasks and tools are read over gRPC (``Planner.ListTasks``, ``ToolExecutor.ListTools``)
from this node when it has the role, else from peers, so the API works whatever mix of
roles the bridge node has and never reaches into another component's internals.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import grpc
import segno
from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from llmlab_grpc.mesh.peer_calls import Candidate, PeerCallError, PeerCalls, role_candidates
from llmlab_grpc.proto.llmlab.v1 import (
    common_pb2,
    planner_pb2,
    planner_pb2_grpc,
    tool_executor_pb2,
    tool_executor_pb2_grpc,
)

if TYPE_CHECKING:
    from llmlab_grpc.bridge.component import BridgeComponent

RPC_TIMEOUT_S = 1.5
MAX_TASKS = 100


def _state(state: int) -> str:
    return common_pb2.PeerState.Name(state).removeprefix("PEER_STATE_").lower()


def _dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


class StatusApi:
    """Handlers of ``/api/*``; reads the bridge component's ports, hub and pairing tokens."""

    def __init__(self, bridge: BridgeComponent) -> None:
        self.bridge = bridge
        self.ports = bridge.ports
        self.me = bridge.ports.me
        self.peers = bridge.ports.peers
        self.policy = PeerCalls("node")

    def routes(self) -> list[Route]:
        return [
            Route("/api/nodes", self.nodes),
            Route("/api/tasks", self.tasks),
            Route("/api/cache", self.cache),
            Route("/api/tools", self.tools),
            Route("/api/pairing", self.pairing),
            Route("/api/dashboard-link", self.dashboard_link, methods=["POST"]),
            Route("/healthz", self.health),
        ]

    # --- access ----------------------------------------------------------------

    def denied(self, request: Request) -> JSONResponse | None:
        """None when the caller may read the API, else the 401 answer."""
        why = self.bridge.access.refusal(request)
        if why is None:
            return None
        return JSONResponse({"error": why}, status_code=401, headers={"www-authenticate": "Bearer"})

    # --- handlers --------------------------------------------------------------

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "node_id": self.me.node_id})

    def _row(self, info: common_pb2.NodeInfo, state: str, last_seen: float, source: str,
             load: common_pb2.NodeLoad, stats: common_pb2.CacheStatistics | None) -> dict[str, Any]:
        via = self.peers.get(info.via_node_id) if info.via_node_id else None
        via_name = self.me.name if info.via_node_id == self.me.node_id else (
            via.info.name if via else info.via_node_id)
        row: dict[str, Any] = {
            "node_id": info.node_id, "name": info.name, "address": info.address,
            "kind": "mobile" if info.kind == common_pb2.NODE_KIND_MOBILE else "grpc",
            "via_node_id": info.via_node_id, "via_name": via_name if info.via_node_id else "",
            "roles": list(info.roles), "tools": list(info.tools), "models": list(info.models),
            "version": info.version, "http_url": info.http_url, "state": state,
            "last_seen_unix_ms": int(last_seen * 1000), "source": source,
            "load": _dict(load), "cache": _dict(stats) if stats is not None and stats.ByteSize() else None,
        }
        session = self.bridge.hub.sessions.get(info.node_id)
        if session is not None:
            row["mobile"] = session.summary()
        return row

    async def nodes(self, request: Request) -> JSONResponse:
        if (denied := self.denied(request)) is not None:
            return denied
        rows = [self._row(self.ports.info(), "self", time.time(), "self", self.ports.load.proto(),
                          self.ports.cache_stats())]
        for peer in self.peers.to_protos():
            rows.append(self._row(peer.info, _state(peer.state), peer.last_seen.ToNanoseconds() / 1e9, peer.source,
                                  peer.load, peer.cache_stats))
        return JSONResponse({
            "self": self.me.node_id,
            "bridge": {"node_id": self.me.node_id, "name": self.me.name,
                       "http_url": self.me.http_url, "mobile_nodes": len(self.bridge.hub.sessions)},
            "nodes": rows,
            "generated_unix_ms": int(time.time() * 1000),
        })

    async def cache(self, request: Request) -> JSONResponse:
        if (denied := self.denied(request)) is not None:
            return denied
        per_node: list[dict[str, Any]] = []
        own = self.ports.cache_stats()
        if own is not None:
            per_node.append({"node_id": self.me.node_id, "name": self.me.name, "kind": "grpc",
                             "stats": _dict(own)})
        for record in self.peers.all():
            if record.info.kind == common_pb2.NODE_KIND_MOBILE or "cache" in record.info.roles \
                    or record.cache_stats.ByteSize():
                per_node.append({
                    "node_id": record.node_id, "name": record.info.name,
                    "kind": "mobile" if record.info.kind == common_pb2.NODE_KIND_MOBILE else "grpc",
                    "stats": _dict(record.cache_stats),
                })
        grpc_rows = [r for r in per_node if r["kind"] == "grpc"]
        total: dict[str, float] = {k: sum(int(r["stats"].get(k, 0)) for r in grpc_rows)
                 for k in ("hits", "misses", "puts", "evictions", "expirations", "entries", "bytes",
                           "replica_entries", "replication_shortfall")}
        lookups = total["hits"] + total["misses"]
        total["hit_ratio"] = total["hits"] / lookups if lookups else 0.0
        note = "" if grpc_rows else "no node with the cache role has reported statistics yet"
        return JSONResponse({"total": total, "nodes": per_node, "note": note,
                             "generated_unix_ms": int(time.time() * 1000)})

    def _targets(self, role: str) -> list[Candidate]:
        """This node (when it has the role) and live gRPC peers with it, ranked by the peer-call policy."""
        me = self.me
        here = Candidate(me.node_id, me.name, me.address, local=True) if role in me.roles else None
        return self.policy.rank(role_candidates(self.peers.with_role(role), role, here=here,
                                                interval_s=self.ports.settings.heartbeat_interval_s))

    async def tasks(self, request: Request) -> JSONResponse:
        if (denied := self.denied(request)) is not None:
            return denied
        try:
            limit = max(1, min(MAX_TASKS, int(request.query_params.get("limit", "20"))))
        except ValueError:
            return JSONResponse({"error": "limit must be an integer 1-100"}, status_code=400)
        targets = self._targets("planner")

        async def ask(name: str, address: str) -> tuple[str, list[planner_pb2.Task], str]:
            stub = planner_pb2_grpc.PlannerStub(self.ports.channels.get(address))
            tasks: list[planner_pb2.Task] = []
            token = ""
            try:
                for _ in range(limit):  # pages (each within the planner's byte budget) until limit tasks
                    reply = await stub.ListTasks(planner_pb2.ListTasksRequest(page_size=limit - len(tasks),
                                                                              page_token=token),
                                                 timeout=RPC_TIMEOUT_S)
                    tasks.extend(reply.tasks)
                    token = reply.next_page_token
                    if not token or not reply.tasks or len(tasks) >= limit:
                        break
            except grpc.aio.AioRpcError as err:
                return name, tasks, f"{err.code().name}: {err.details()}"
            return name, tasks, ""

        answers = await asyncio.gather(*(ask(t.name, t.address) for t in targets))
        seen: dict[str, planner_pb2.Task] = {}
        for _, tasks, _ in answers:
            for task in tasks:
                seen.setdefault(task.task_id, task)
        ordered = sorted(seen.values(), key=lambda t: t.created_at.ToNanoseconds(), reverse=True)[:limit]
        sources = [{"node": n, "ok": not err, "tasks": len(t), "error": err} for n, t, err in answers]
        note = "" if ordered else ("no planner node in the mesh" if not targets
                                   else "no tasks yet" if any(s["ok"] for s in sources)
                                   else "no planner answered: " + "; ".join(err for _, _, err in answers))
        return JSONResponse({"tasks": [_dict(t) for t in ordered], "sources": sources, "note": note,
                             "generated_unix_ms": int(time.time() * 1000)})

    async def tools(self, request: Request) -> JSONResponse:
        if (denied := self.denied(request)) is not None:
            return denied
        specs: dict[str, dict[str, Any]] = {}
        note = ""
        try:
            reply, _, _ = await self.policy.call(
                self._targets("tools")[:3],
                lambda c: tool_executor_pb2_grpc.ToolExecutorStub(self.ports.channels.get(c.address)).ListTools(
                    tool_executor_pb2.ListToolsRequest(), timeout=RPC_TIMEOUT_S),
                what="tools node")
            specs = {s.name: _dict(s) for s in reply.tools}
        except PeerCallError as exc:
            note = (f"{exc.candidate.name}: {exc.code.name}: {exc.details}" if exc.candidate is not None
                    else exc.tried() or "no node with the tools role answered")
        for spec in self.bridge.hub.tool_specs():  # this bridge's mobile nodes, surely current
            row = specs.setdefault(spec.name, _dict(spec))
            for node_id, node_name in zip(spec.node_ids, spec.node_names, strict=True):
                if node_id not in row.setdefault("node_ids", []):
                    row["node_ids"].append(node_id)
                    row.setdefault("node_names", []).append(node_name)
        return JSONResponse({"tools": [specs[n] for n in sorted(specs)], "note": note,
                             "generated_unix_ms": int(time.time() * 1000)})

    async def pairing(self, request: Request) -> JSONResponse:
        if (denied := self.denied(request)) is not None:
            return denied
        token, expires = self.bridge.hub.pairing.current()
        url = f"{self.me.http_url}/#token={token}"
        qr = segno.make(url, error="m")
        return JSONResponse(
            {"token": token, "expires_unix_ms": int(expires * 1000), "ttl_s": self.bridge.hub.pairing.ttl_s,
             "pwa_url": url, "qr_svg": qr.svg_data_uri(scale=5, border=2)},
            headers={"cache-control": "no-store"},
        )

    async def dashboard_link(self, request: Request) -> JSONResponse:
        """A one-time ``/llmlab?token=`` link; only the mesh secret or this machine may mint one."""
        access = self.bridge.access
        if not (access.has_secret(request) or ("authorization" not in request.headers and access.is_local(request))):
            return JSONResponse({"error": "a dashboard link is minted for the mesh secret or this machine only"},
                                status_code=401, headers={"www-authenticate": "Bearer"})
        token, expires = access.sessions.mint_link()
        return JSONResponse({"url": f"{self.me.http_url}/llmlab?token={token}",
                             "expires_unix_ms": int(expires * 1000)}, headers={"cache-control": "no-store"})
