"""A mobile node in Python: speaks the same WebSocket protocol as ``frontend/mobile_worker.js``.

For tests, benchmarks and headless devices. It pairs, heartbeats, answers task
assignments with an async handler, and keeps a cache replica (a dict) fed by
``cache_sync``; ``local_cache`` is answered from that replica like the browser does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

LOCAL_CACHE_SPEC: dict[str, Any] = {
    "name": "local_cache",
    "description": "Look an LLM answer up in this mobile node's cache replica, by key or by prompt and model.",
    "capabilities": ["cache"],
    "inputSchema": {"type": "object", "properties": {"key": {"type": "string"}, "prompt": {"type": "string"},
                                                     "model": {"type": "string"}}},
    "timeoutMs": 2000,
}


class PairingRefused(RuntimeError):
    """The bridge answered ``hello`` with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def ws_url(base: str) -> str:
    """``http://host:port`` (or a ws URL) → ``ws://host:port/ws/task``."""
    if base.startswith(("ws://", "wss://")):
        return base
    return base.replace("https://", "wss://", 1).replace("http://", "ws://", 1).rstrip("/") + "/ws/task"


class MobileClient:
    """One paired connection. ``await connect()``, then ``run()`` in a task, ``close()`` at the end."""

    def __init__(self, base_url: str, token: str, name: str = "py-mobile",
                 tools: list[dict[str, Any]] | None = None, handler: Handler | None = None,
                 origin: str | None = None, cache_replica: bool = False, resume: tuple[str, str] | None = None,
                 heartbeat: bool = True) -> None:
        self.url = ws_url(base_url)
        self.token = token
        self.name = name
        self.tools = tools if tools is not None else [LOCAL_CACHE_SPEC]
        self.handler = handler
        self.origin = origin
        self.cache_replica = cache_replica
        self.resume = resume  # (node_id, session_token)
        self.heartbeat_enabled = heartbeat
        self.replica: dict[str, dict[str, Any]] = {}
        self.errors: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] = {}
        self.tasks_done = 0
        self.ws: ClientConnection | None = None
        self._next = 0
        self._running: set[asyncio.Task[None]] = set()

    @property
    def node_id(self) -> str:
        return str(self.welcome.get("nodeId", ""))

    def _id(self) -> str:
        self._next += 1
        return str(self._next)

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        message.setdefault("id", self._id())
        await self.ws.send(json.dumps(message))

    async def connect(self, timeout: float = 10.0) -> dict[str, Any]:
        """Open the socket and pair; returns the welcome or raises ``PairingRefused``."""
        origin = Origin(self.origin) if self.origin is not None else None
        self.ws = await connect(self.url, origin=origin, max_size=4 * 1024 * 1024,
                                open_timeout=timeout)
        hello: dict[str, Any] = {"pairingToken": self.token, "name": self.name, "tools": self.tools,
                                 "userAgent": "llmlab-python-client", "cacheReplica": self.cache_replica}
        if self.resume:
            hello["resumeNodeId"], hello["pairingToken"] = self.resume
        await self.send({"hello": hello})
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.ws.recv())
                if "welcome" in message:
                    self.welcome = message["welcome"]
                    return self.welcome
                if "error" in message:
                    raise PairingRefused(message["error"].get("code", ""), message["error"].get("message", ""))

    async def run(self) -> None:
        """Serve tasks and cache syncs until the socket closes."""
        assert self.ws is not None
        beat = asyncio.create_task(self._beat()) if self.heartbeat_enabled else None
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                if "taskAssignment" in message:
                    task = asyncio.create_task(self._answer(message["taskAssignment"]))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
                elif "cacheSync" in message:
                    sync = message["cacheSync"]
                    for key in sync.get("deletedKeys", []):
                        self.replica.pop(key, None)
                    for entry in sync.get("entries", []):
                        self.replica[entry["key"]] = entry
                elif "error" in message:
                    self.errors.append(message["error"])
        except Exception:  # closed under us: the caller sees it through ws.state
            pass
        finally:
            if beat is not None:
                beat.cancel()

    async def _beat(self) -> None:
        interval = int(self.welcome.get("heartbeatIntervalMs", 2000)) / 1000
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await self.send({"heartbeat": {"sentUnixMs": str(int(time.time() * 1000)),
                                               "cacheEntries": str(len(self.replica))}})

    async def _answer(self, assignment: dict[str, Any]) -> None:
        started = time.perf_counter()
        reply: dict[str, Any] = {"taskId": assignment["taskId"]}
        try:
            reply["result"] = await self.run_tool(assignment["tool"], assignment.get("arguments", {}))
        except Exception as exc:
            reply["error"] = {"code": getattr(exc, "code", "FAILED"), "message": str(exc)}
        reply["durationMs"] = (time.perf_counter() - started) * 1000
        self.tasks_done += 1
        with contextlib.suppress(Exception):
            await self.send({"taskResult": reply})

    async def run_tool(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        if self.handler is not None:
            return await self.handler(tool, arguments)
        if tool == "local_cache":
            entry = self.replica.get(arguments.get("key", ""))
            if entry is None and arguments.get("prompt") is not None:
                entry = next((e for e in self.replica.values() if e.get("prompt") == arguments["prompt"]
                              and e.get("model") == arguments.get("model")), None)
            if entry is None:
                return {"found": False, "key": arguments.get("key", "")}
            return {"found": True, "key": entry["key"], "response": entry.get("response", "")}
        raise RuntimeError(f"no tool {tool}")

    async def close(self) -> None:
        for task in list(self._running):
            task.cancel()
        if self.ws is not None:
            await self.ws.close()
