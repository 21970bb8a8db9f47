"""Child `llmlab node` processes on 127.0.0.1:0, stopped by PID: for tests, benchmarks and demos."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.proto.llmlab.v1 import node_pb2, node_pb2_grpc

LISTEN_RE = re.compile(r"^llmlab node (?P<name>\S+) listening on (?P<address>\S+)")


@dataclass
class NodeProcess:
    """One `llmlab node` child process."""

    name: str
    secret: str
    process: subprocess.Popen[str]
    address: str = ""
    output: list[str] = field(default_factory=list)
    listening: threading.Event = field(default_factory=threading.Event)

    @property
    def pid(self) -> int:
        return self.process.pid

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def call(self, stub_cls: type, method: str, request: Any, timeout: float = 10.0, secret: str | None = None) -> Any:
        with self.channel() as channel:
            return getattr(stub_cls(channel), method)(request, metadata=bearer(secret or self.secret), timeout=timeout)

    def peer_names(self) -> set[str]:
        try:
            reply = self.call(node_pb2_grpc.NodeStub, "ListPeers", node_pb2.ListPeersRequest(), timeout=2.0)
        except grpc.RpcError:
            return set()
        return {p.info.name for p in reply.peers}

    def send_signal(self, sig: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        self.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_node(name: str, secret: str, *args: str, env: dict[str, str] | None = None,
               log_path: Path | None = None, log_mode: str = "a") -> NodeProcess:
    """Start a node on 127.0.0.1:0 without waiting; a thread reads its stdout.

    The secret travels in the environment, never in argv, so it stays out of ``ps``.
    Every stdout line lands in ``output``; the "listening on" line sets ``address`` and
    ``listening`` (which is also set when stdout closes, i.e. the node exited).
    """
    cmd = [sys.executable, "-m", "llmlab_grpc", "node", "--name", name, "--host", "127.0.0.1", "--port", "0", *args]
    return launch(cmd, name, secret, env=env, log_path=log_path, log_mode=log_mode)


def launch(cmd: list[str], name: str, secret: str, env: dict[str, str] | None = None,
           log_path: Path | None = None, log_mode: str = "a") -> NodeProcess:
    """Run ``cmd`` (an `llmlab node` command line, possibly behind a wrapper that execs it, such
    as ``ip netns exec``) and follow its stdout as :func:`start_node` describes."""
    full_env = {**os.environ, "LLMLAB_MESH_SECRET": secret, **(env or {})}
    stderr = open(log_path, log_mode) if log_path else subprocess.DEVNULL  # noqa: SIM115 - the child's for life
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=full_env,
                               stdin=subprocess.DEVNULL)
    node = NodeProcess(name=name, secret=secret, process=process)

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:  # read to the end so the child never blocks on a full pipe
            node.output.append(line)
            match = LISTEN_RE.match(line)
            if match and not node.listening.is_set():
                node.address = match.group("address")
                node.listening.set()
        node.listening.set()

    threading.Thread(target=read, daemon=True).start()
    return node


def spawn_node(name: str, secret: str, *args: str, env: dict[str, str] | None = None,
               start_timeout: float = 60.0, log_dir: Path | None = None) -> NodeProcess:
    """Start a node and wait for its "listening on" line."""
    node = start_node(name, secret, *args, env=env, log_path=log_dir / f"{name}.log" if log_dir else None)
    if not node.listening.wait(start_timeout) or not node.address:
        node.stop(signal.SIGKILL)
        raise AssertionError(f"node {name} did not start: {''.join(node.output)}")
    return node
