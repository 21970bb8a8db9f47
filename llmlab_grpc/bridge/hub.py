"""The mobile nodes paired with this bridge: pairing, liveness, and tasks sent to them.

The hub knows nothing about HTTP: a connection is a ``Link`` (send an envelope, close).
It keeps each paired device as a row of the node's peer table (kind MOBILE, via this
node), so routers see mobile nodes like any other peer; it turns a tool call into a
``task_assignment`` with a deadline and waits for the matching ``task_result``. A
device that disconnects or misses heartbeats is removed at once and its pending tasks
fail with UNAVAILABLE, which the router treats as a reason to fail over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from llmlab_grpc.bridge.pairing import PairingTokens, SessionTokens
from llmlab_grpc.bridge.protocol import (
    DEADLINE_EXCEEDED,
    INVALID_ARGUMENT,
    NOT_FOUND,
    RESOURCE_EXHAUSTED,
    UNAUTHENTICATED,
    ProtocolError,
    error,
)
from llmlab_grpc.mesh.endpoints import MeshEndpoints
from llmlab_grpc.proto.llmlab.v1 import bridge_pb2, common_pb2
from llmlab_grpc.tools.base import InvalidArguments, ToolFailure, ToolOutcome
from llmlab_grpc.tools.builtin.url_guard import UrlGuard, UrlRefused, parse_url
from llmlab_grpc.tools.convert import from_struct, to_struct

if TYPE_CHECKING:
    from llmlab_grpc.config import NodeSettings
    from llmlab_grpc.ports import LocalNode, MobileRows

log = logging.getLogger(__name__)

TOOL_ERROR_CODES = frozenset({"INVALID_ARGUMENT", "TIMEOUT", "REFUSED", "FAILED", "UNAVAILABLE"})
TOOL_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
MAX_TOOLS = 16
DEFAULT_TASK_TIMEOUT_S = 30.0
MAX_TOOL_TIMEOUT_MS = 120_000
MESH_CHECK_RESOLVE_S = 2.0
"""Longest the bridge waits on DNS to check that a device tool's URL is not one of the mesh's own servers."""
MISSED_HEARTBEATS = 3
CLOSE_REPLACED = 4001
"""WebSocket close code telling a device another connection took over its node_id: do not reconnect."""
"""A device silent for this many heartbeat intervals (plus a second) is dropped."""


class Link(Protocol):
    """One connection to a device, whatever carries it."""

    async def send(self, envelope: bridge_pb2.BridgeEnvelope) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class LinkClosed(ConnectionError):
    """The connection went away while sending."""


@dataclass
class MobileSession:
    """One paired device."""

    node_id: str
    name: str
    link: Link
    info: common_pb2.NodeInfo
    specs: dict[str, common_pb2.ToolSpec]
    user_agent: str = ""
    cache_replica: bool = False
    paired_at: float = field(default_factory=time.time)
    last_heard: float = field(default_factory=time.monotonic)
    last_sent_heartbeat: float = 0.0
    busy: int = 0
    current_task: str = ""
    cache_entries: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    pending: dict[str, asyncio.Future[bridge_pb2.TaskResult]] = field(default_factory=dict)
    closed: bool = False

    def summary(self) -> dict[str, Any]:
        """What the dashboard shows about the device."""
        return {
            "node_id": self.node_id,
            "name": self.name,
            "user_agent": self.user_agent,
            "paired_at_unix_ms": int(self.paired_at * 1000),
            "busy": self.busy,
            "current_task": self.current_task,
            "cache_replica": self.cache_replica,
            "cache_entries": self.cache_entries,
            "tasks_done": self.tasks_done,
            "tasks_failed": self.tasks_failed,
            "tools": sorted(self.specs),
        }


def clean_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:48] or "mobile"


class MobileHub:
    """Paired devices of one bridge node."""

    def __init__(self, settings: NodeSettings, me: LocalNode, peers: MobileRows) -> None:
        self.me = me
        self.peers = peers
        """The node's peer table: the hub writes the rows of the phones paired here."""
        self.settings = settings
        self.sessions: dict[str, MobileSession] = {}
        self.pairing = PairingTokens(settings.bridge_pairing_ttl_s)
        self.session_tokens = SessionTokens(settings.mesh_secret, me.node_id)
        self.heartbeat_s = settings.bridge_heartbeat_ms / 1000
        self.timeout_s = MISSED_HEARTBEATS * self.heartbeat_s + 1.0
        self.allowed_tools = set(settings.bridge_mobile_tools)
        self.max_clients = settings.bridge_max_clients
        # Private addresses are the phone's business (its own LAN); the mesh's own ports never are.
        # A name the bridge cannot resolve quickly is left to the phone (it may resolve it on its own network).
        self.url_guard = UrlGuard(allow_private=True, mesh=MeshEndpoints(me, peers),
                                  resolve_timeout_s=MESH_CHECK_RESOLVE_S)
        self._task: asyncio.Task[None] | None = None
        self.on_paired: list[Callable[[MobileSession], None]] = []

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._sweep_forever(), name="bridge-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for session in list(self.sessions.values()):
            await self.drop(session, "the bridge node is stopping", close_code=1001)

    async def _sweep_forever(self) -> None:
        tick = min(1.0, max(0.1, self.heartbeat_s / 2))
        while True:
            try:
                await self.sweep()
            except Exception:  # liveness bookkeeping must outlive any one bug
                log.exception("bridge sweep failed")
            await asyncio.sleep(tick)

    async def sweep(self) -> None:
        """Drop silent devices; keep the rows of live ones fresh; heartbeat them."""
        now = time.monotonic()
        for session in list(self.sessions.values()):
            if now - session.last_heard > self.timeout_s:
                log.info("mobile node %s missed its heartbeats", session.name)
                with contextlib.suppress(Exception):
                    await session.link.send(error(
                        DEADLINE_EXCEEDED, f"no message for {self.timeout_s:g} s (missed heartbeats); reconnect"))
                await self.drop(session, "missed heartbeats", close_code=1001)
                continue
            self._publish(session)
            if now - session.last_sent_heartbeat >= self.heartbeat_s:
                session.last_sent_heartbeat = now
                beat = bridge_pb2.Heartbeat(sent_unix_ms=int(time.time() * 1000), busy=session.busy)
                with contextlib.suppress(Exception):
                    await session.link.send(bridge_pb2.BridgeEnvelope(heartbeat=beat))

    def _publish(self, session: MobileSession) -> None:
        """(Re)write the device's peer-table row: it is alive now."""
        load = common_pb2.NodeLoad(in_flight=session.busy, tools_running=session.busy)
        stats = common_pb2.CacheStatistics(entries=session.cache_entries, store="browser") \
            if session.cache_replica else None
        self.peers.upsert(session.info, "bridge", load=load, cache_stats=stats)

    # --- pairing -----------------------------------------------------------------

    def _authorise(self, hello: bridge_pb2.Hello, ref_id: str) -> str:
        """The node_id the hello may use, or ProtocolError(UNAUTHENTICATED, close)."""
        token = hello.pairing_token
        if hello.resume_node_id and token.startswith("s1."):
            node_id = self.session_tokens.node_of(token)
            if node_id is not None and node_id == hello.resume_node_id:
                return node_id
            raise ProtocolError(UNAUTHENTICATED, "session token is expired or not for this node_id; "
                                "pair again with a token from the dashboard", ref_id, close=True)
        if not token or not self.pairing.valid(token):
            raise ProtocolError(UNAUTHENTICATED, "pairing token is wrong or expired; scan the QR code "
                                "on the dashboard (/llmlab) for a fresh one", ref_id, close=True)
        return f"mobile-{secrets.token_hex(4)}"

    def _unique_name(self, wanted: str, node_id: str) -> str:
        taken = {r.info.name for r in self.peers.all() if r.node_id != node_id}
        taken.add(self.me.name)
        return wanted if wanted not in taken else f"{wanted}-{node_id[-4:]}"

    def _accept_tools(self, hello: bridge_pb2.Hello) -> tuple[dict[str, common_pb2.ToolSpec], list[str]]:
        accepted: dict[str, common_pb2.ToolSpec] = {}
        refused: list[str] = []
        for spec in list(hello.tools)[:MAX_TOOLS]:
            if not TOOL_NAME_RE.match(spec.name) or spec.name not in self.allowed_tools:
                refused.append(spec.name[:64])
                continue
            clean = common_pb2.ToolSpec()
            clean.CopyFrom(spec)
            del clean.node_ids[:]
            del clean.node_names[:]
            clean.description = spec.description[:500]
            del clean.capabilities[8:]
            clean.timeout_ms = max(0, min(spec.timeout_ms, MAX_TOOL_TIMEOUT_MS))
            accepted[spec.name] = clean
        refused += [s.name[:64] for s in list(hello.tools)[MAX_TOOLS:]]
        return accepted, refused

    async def pair(self, link: Link, hello: bridge_pb2.Hello, ref_id: str) -> MobileSession:
        """Check the hello, register the device, answer ``welcome``. Raises ProtocolError."""
        node_id = self._authorise(hello, ref_id)
        previous = self.sessions.get(node_id)
        if previous is not None:
            await self.drop(previous, "replaced by a new connection of the same node", close_code=CLOSE_REPLACED)
        if len(self.sessions) >= self.max_clients:
            raise ProtocolError(RESOURCE_EXHAUSTED, f"this bridge already serves {self.max_clients} mobile "
                                "nodes; try another bridge or later", ref_id, close=True)
        specs, refused = self._accept_tools(hello)
        name = self._unique_name(clean_name(hello.name), node_id)
        info = common_pb2.NodeInfo(
            node_id=node_id, name=name, roles=["mobile"], tools=sorted(specs), version="browser",
            mesh_id=self.me.mesh_id, kind=common_pb2.NODE_KIND_MOBILE, via_node_id=self.me.node_id,
        )
        session = MobileSession(node_id=node_id, name=name, link=link, info=info, specs=specs,
                                user_agent=hello.user_agent[:300], cache_replica=hello.cache_replica)
        self.sessions[node_id] = session
        self._publish(session)
        welcome = bridge_pb2.Welcome(
            node_id=node_id, bridge_node_id=self.me.node_id,
            heartbeat_interval_ms=self.settings.bridge_heartbeat_ms,
            max_message_bytes=self.settings.bridge_max_message_bytes,
            session_token=self.session_tokens.issue(node_id),
            rate_limit_per_s=int(self.settings.bridge_rate_per_s),
        )
        try:
            await link.send(bridge_pb2.BridgeEnvelope(id=ref_id, welcome=welcome))
        except Exception:
            await self.drop(session, "gone before its welcome")
            raise
        if refused:
            allowed = ", ".join(sorted(self.allowed_tools)) or "none"
            await link.send(error(INVALID_ARGUMENT, f"tools not accepted from mobile nodes: {', '.join(refused)} "
                                  f"(allowed: {allowed})", ref_id))
        log.info("mobile node %s (%s) paired with tools %s", name, node_id, ",".join(sorted(specs)) or "-")
        for listener in list(self.on_paired):
            listener(session)
        return session

    async def drop(self, session: MobileSession, reason: str, close_code: int = 1000) -> None:
        """Forget a device: its row, its pending tasks (UNAVAILABLE), its connection."""
        if session.closed:
            return
        session.closed = True
        if self.sessions.get(session.node_id) is session:
            del self.sessions[session.node_id]
            record = self.peers.get(session.node_id)
            if record is not None and record.info.via_node_id == self.me.node_id:
                self.peers.remove(session.node_id)
        for task_id, future in list(session.pending.items()):
            if not future.done():
                future.set_exception(ToolFailure(
                    "UNAVAILABLE", f"mobile node {session.name} went away during task {task_id}: {reason}"))
        with contextlib.suppress(Exception):
            await session.link.close(close_code, reason[:120])
        log.info("mobile node %s (%s) removed: %s", session.name, session.node_id, reason)

    # --- messages from a paired device ---------------------------------------------

    def heard(self, session: MobileSession) -> None:
        session.last_heard = time.monotonic()

    def heartbeat(self, session: MobileSession, beat: bridge_pb2.Heartbeat) -> None:
        session.cache_entries = max(0, beat.cache_entries)
        session.current_task = beat.current_task[:200]
        self._publish(session)

    def task_result(self, session: MobileSession, result: bridge_pb2.TaskResult, ref_id: str) -> None:
        """Deliver an answer to the task waiting for it; NOT_FOUND for unknown or late ones."""
        future = session.pending.get(result.task_id)
        if future is None or future.done():
            raise ProtocolError(NOT_FOUND, f"no pending task {result.task_id!r} (unknown, or its deadline "
                                "passed and it failed over)", ref_id)
        future.set_result(result)

    def is_pending(self, session: MobileSession, task_id: str) -> bool:
        future = session.pending.get(task_id)
        return future is not None and not future.done()

    # --- tasks to devices -----------------------------------------------------------

    def tool_specs(self) -> list[common_pb2.ToolSpec]:
        """Tools of the connected devices, one spec per tool with every device that has it."""
        merged: dict[str, common_pb2.ToolSpec] = {}
        for session in sorted(self.sessions.values(), key=lambda s: s.name):
            for name, spec in session.specs.items():
                if name not in merged:
                    merged[name] = common_pb2.ToolSpec()
                    merged[name].CopyFrom(spec)
                merged[name].node_ids.append(session.node_id)
                merged[name].node_names.append(session.name)
        return [merged[n] for n in sorted(merged)]

    async def execute(self, node_id: str, tool: str, arguments: dict[str, Any], timeout_s: float) -> ToolOutcome:
        """Run ``tool`` on a paired device and wait for its answer until the deadline.

        ``timeout_s`` <= 0 means the timeout the device published for the tool, which also
        caps any longer one. Raises ``ToolFailure("UNAVAILABLE")`` when the device is not
        connected, does not offer the tool, disconnects, or misses the deadline (the router
        then fails over);
        ``InvalidArguments`` when the device refused the arguments. A tool that ran and
        failed comes back as ``ToolOutcome.error``.
        """
        session = self.sessions.get(node_id)
        if session is None:
            raise ToolFailure("UNAVAILABLE", f"mobile node {node_id} is not connected to bridge "
                              f"{self.me.name}")
        spec = session.specs.get(tool)
        if spec is None:
            raise ToolFailure("UNAVAILABLE", f"mobile node {session.name} does not offer tool {tool!r}")
        refused = await self._mesh_refusal(arguments)
        if refused is not None:
            return ToolOutcome(error=ToolFailure("REFUSED", f"{tool}: {refused}"))
        own_limit = spec.timeout_ms / 1000 if spec.timeout_ms > 0 else DEFAULT_TASK_TIMEOUT_S
        timeout_s = own_limit if timeout_s <= 0 else min(timeout_s, own_limit)
        task_id = secrets.token_hex(8)
        future: asyncio.Future[bridge_pb2.TaskResult] = asyncio.get_running_loop().create_future()
        session.pending[task_id] = future
        session.busy += 1
        self._publish(session)
        assignment = bridge_pb2.TaskAssignment(
            task_id=task_id, tool=tool, arguments=to_struct(arguments),
            deadline_unix_ms=int((time.time() + timeout_s) * 1000),
        )
        started = time.perf_counter()
        try:
            try:
                await asyncio.wait_for(
                    session.link.send(bridge_pb2.BridgeEnvelope(id=task_id, task_assignment=assignment)), timeout_s)
                result = await asyncio.wait_for(future, timeout_s - (time.perf_counter() - started))
            except TimeoutError:
                session.tasks_failed += 1
                raise ToolFailure("UNAVAILABLE", f"mobile node {session.name} did not answer {tool} within "
                                  f"{timeout_s:g} s") from None
            except (LinkClosed, ConnectionError) as exc:
                session.tasks_failed += 1
                await self.drop(session, f"send failed: {exc}")
                raise ToolFailure("UNAVAILABLE", f"mobile node {session.name} is unreachable: {exc}") from None
            except ToolFailure:
                session.tasks_failed += 1
                raise
        finally:
            session.pending.pop(task_id, None)
            session.busy = max(0, session.busy - 1)
            if not session.closed:
                self._publish(session)
        return self._outcome(session, tool, result, (time.perf_counter() - started) * 1000)

    async def _mesh_refusal(self, arguments: dict[str, Any]) -> str | None:
        """Why a ``url`` argument may not be fetched from a device: it names one of the mesh's own servers.

        A page served by this bridge (the PWA) that fetches ``/api/pairing`` from the same
        machine would be a loopback client; any mesh port is off limits for device tools.
        Bad or unresolvable URLs are left for the device to answer.
        """
        url = arguments.get("url")
        if not isinstance(url, str):
            return None
        try:
            target = parse_url(url)
        except UrlRefused:
            return None  # the device's own argument check answers that
        try:
            await self.url_guard.resolve(target.host, target.port)
        except UrlRefused as exc:
            return exc.message  # a mesh port, or a cloud metadata address (never useful from a phone either)
        except ToolFailure:
            return None
        return None

    def _outcome(self, session: MobileSession, tool: str, result: bridge_pb2.TaskResult,
                 duration_ms: float) -> ToolOutcome:
        outcome = ToolOutcome(duration_ms=duration_ms)
        if result.HasField("error") and (result.error.code or result.error.message):
            session.tasks_failed += 1
            code = result.error.code if result.error.code in TOOL_ERROR_CODES else "FAILED"
            message = f"{tool} on mobile node {session.name}: {result.error.message[:2000]}"
            if code == "INVALID_ARGUMENT":
                raise InvalidArguments(message)
            outcome.error = ToolFailure(code, message)
            return outcome
        session.tasks_done += 1
        outcome.result = from_struct(result.result)
        return outcome
