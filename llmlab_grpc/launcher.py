"""``llmlab up``: a whole mesh on this machine, one process per node.

Nodes bind to 127.0.0.1 with ephemeral ports; zeroconf binds to 127.0.0.1 too, so a
local mesh never multicasts on the LAN. With ``--no-mdns`` the first node is the seed
of the others and gossip does the rest. The launcher waits until every node is
healthy and sees every other, writes the state file, prints ``ready``, and on
Ctrl-C/SIGTERM stops every node it started (SIGTERM, then SIGKILL after a grace).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import grpc

from llmlab_grpc import ROLES
from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.procs import NodeProcess, start_node
from llmlab_grpc.proto.llmlab.v1 import node_pb2, node_pb2_grpc
from llmlab_grpc.state import home, read_state, write_state

if TYPE_CHECKING:
    from llmlab_grpc.inference.ray_head import RayHead

DASHBOARD_RE = re.compile(r"^llmlab node (?P<name>\S+) dashboard (?P<url>\S+)$")
LINK_RE = re.compile(r"^llmlab node (?P<name>\S+) dashboard-link (?P<url>\S+)$")

START_TIMEOUT_S = 60.0


def plan_roles(count: int) -> list[list[str]]:
    """Spread roles so that every role exists and cache replicas have enough peers."""
    if count < 1:
        raise ValueError("a mesh needs at least one node")
    if count == 1:
        return [list(ROLES)]
    plan = [["planner", "tools", "cache", "replica"] for _ in range(count)]
    plan[0].insert(2, "llm")
    plan[-1].append("bridge")
    return plan


@dataclass
class LaunchedNode:
    """A node process started by the launcher."""

    roles: list[str]
    proc: NodeProcess
    log_path: Path

    @property
    def name(self) -> str:
        return self.proc.name

    @property
    def process(self) -> subprocess.Popen[str]:
        return self.proc.process

    @property
    def address(self) -> str:
        return self.proc.address

    @property
    def dashboard(self) -> str:
        """The URL from the bridge's "dashboard" line (printed before "listening on"), if any."""
        return next((m.group("url") for line in self.proc.output if (m := DASHBOARD_RE.match(line))), "")

    @property
    def dashboard_link(self) -> str:
        """The one-time link the bridge printed: it gives one browser a dashboard session (bridge/access.py)."""
        return next((m.group("url") for line in self.proc.output if (m := LINK_RE.match(line))), "")


def mesh_secret() -> str:
    """Reuse the mesh's secret across runs so scripts keep working; generate one the first time."""
    state = read_state() or {}
    return os.environ.get("LLMLAB_MESH_SECRET") or state.get("secret") or secrets.token_urlsafe(32)


class LocalMesh:
    """Starts, watches and stops the node processes of one local mesh."""

    def __init__(self, count: int, mdns: bool = True, mdns_interface: str = "127.0.0.1",
                 extra_args: list[str] | None = None, out: IO[str] = sys.stdout) -> None:
        self.count = count
        self.mdns = mdns
        self.mdns_interface = mdns_interface
        self.extra_args = extra_args or []
        self.secret = mesh_secret()
        self.nodes: list[LaunchedNode] = []
        self.out = out
        self.ray_head: RayHead | None = None
        self.extra_env: dict[str, str] = {}

    def _spawn(self, name: str, roles: list[str], seeds: list[str]) -> LaunchedNode:
        log_dir = home() / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        args = ["--roles", ",".join(roles), *self.extra_args]
        args += ["--mdns-interface", self.mdns_interface] if self.mdns else ["--no-mdns"]
        for seed in seeds:
            args += ["--peer", seed]
        log_path = log_dir / f"{name}.log"
        node = LaunchedNode(roles, start_node(name, self.secret, *args, env=self.extra_env, log_path=log_path,
                                              log_mode="w"), log_path)
        self.nodes.append(node)
        return node

    def _await_address(self, node: LaunchedNode, deadline: float) -> None:
        node.proc.listening.wait(max(0.0, deadline - time.monotonic()))
        if node.address:
            return
        if node.process.poll() is not None:
            raise RuntimeError(f"{node.name} exited before listening; see {node.log_path}")
        raise RuntimeError(f"{node.name} did not start within {START_TIMEOUT_S:.0f} s; see {node.log_path}")

    def _share_ray(self) -> None:
        """One Ray head for the whole local mesh, as its own process; every node joins it.

        Without it each node with the cache or llm role would start its own Ray cluster
        (seconds and about 0.5 GB each, and several at once time out on a small machine).
        The head is a separate process (``ray start --head --block``) so that no node's
        death takes the others' Ray down; it is stopped after the nodes. A Ray address
        given by the user (``LLMLAB_RAY_ADDRESS`` or ``--ray-address``) is used as it is.
        """
        if os.environ.get("LLMLAB_RAY_ADDRESS") or "--ray-address" in self.extra_args:
            return
        from llmlab_grpc.inference.ray_head import RayHead

        self.ray_head = RayHead.start()
        self.extra_args = [*self.extra_args, *self.ray_head.node_args()]
        self.extra_env.update(self.ray_head.node_env())

    def start(self) -> None:
        self._share_ray()
        deadline = time.monotonic() + START_TIMEOUT_S
        plan = plan_roles(self.count)
        first = self._spawn("node1", plan[0], [])
        self._await_address(first, deadline)
        seeds = [] if self.mdns else [first.address]
        rest = [self._spawn(f"node{i + 1}", roles, seeds) for i, roles in enumerate(plan[1:], start=1)]
        for node in rest:
            self._await_address(node, deadline)
        self._await_converged(deadline)

    def _await_converged(self, deadline: float) -> None:
        """Until every node answers and lists every other node as a peer."""
        want = {n.name for n in self.nodes}
        pending = list(self.nodes)
        while pending and time.monotonic() < deadline:
            for node in list(pending):
                if node.process.poll() is not None:
                    raise RuntimeError(f"{node.name} exited with {node.process.returncode}; see {node.log_path}")
                with grpc.insecure_channel(node.address) as channel:
                    try:
                        reply = node_pb2_grpc.NodeStub(channel).ListPeers(
                            node_pb2.ListPeersRequest(), metadata=bearer(self.secret), timeout=2.0)
                    except grpc.RpcError:
                        continue
                if {p.info.name for p in reply.peers} | {node.name} >= want:
                    pending.remove(node)
            if pending:
                time.sleep(0.2)
        if pending:
            raise RuntimeError("nodes did not see each other in time: " + ", ".join(n.name for n in pending))

    def write_state(self) -> Path:
        return write_state({
            "secret": self.secret,
            "nodes": [{"name": n.name, "address": n.address, "roles": n.roles, "pid": n.process.pid,
                       **({"http_url": n.dashboard.removesuffix("/llmlab")} if n.dashboard else {})}
                      for n in self.nodes],
        })

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every node we started, SIGKILL what is left after the grace."""
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for node in self.nodes:
            try:
                node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        if self.ray_head is not None:
            self.ray_head.stop()
            self.ray_head = None


def run_up(count: int, mdns: bool, mdns_interface: str, extra_args: list[str]) -> int:
    """The body of ``llmlab up``: start, report, wait for a signal, stop."""
    mesh = LocalMesh(count, mdns=mdns, mdns_interface=mdns_interface, extra_args=extra_args)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        mesh.start()
    except (RuntimeError, OSError) as exc:
        print(f"llmlab up: {exc}", file=sys.stderr)
        mesh.stop()
        return 1
    width = max(len(n.name) for n in mesh.nodes)
    for node in mesh.nodes:
        print(f"{node.name:<{width}}  {node.address:<21}  {','.join(node.roles)}", flush=True)
    for node in mesh.nodes:
        if node.dashboard:
            print(f"dashboard: {node.dashboard}", flush=True)
            if node.dashboard_link:
                print(f"dashboard link (one use; for a browser elsewhere or behind a proxy): {node.dashboard_link}",
                      flush=True)
            print(f"openai api: {node.dashboard.removesuffix('/llmlab')}/v1", flush=True)
    path = mesh.write_state()
    print(f"state: {path}", flush=True)
    print("ready", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        print("stopping", flush=True)
        mesh.stop()
        state = read_state() or {}
        state["nodes"] = []
        write_state(state)
    return 0
