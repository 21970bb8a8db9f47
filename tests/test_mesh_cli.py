"""The CLI: bad flags fail clearly; `llmlab up` starts a mesh, writes its state file, stops by signal."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmlab_grpc.proto.llmlab.v1 import node_pb2, node_pb2_grpc
from tests.helpers import wait_until

LLMLAB = [sys.executable, "-m", "llmlab_grpc"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LLMLAB, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["node", "--roles", "planner,wizard", "--secret", "s3cret-s3cret"], "unknown role(s) wizard"),
        (["node", "--peer", "nonsense", "--secret", "s3cret-s3cret"], "is not HOST:PORT"),
        (["node", "--port", "70000", "--secret", "s3cret-s3cret"], "port"),
        (["node", "--port", "many", "--secret", "s3cret-s3cret"], "invalid int value"),
        (["node", "--secret", "short"], "at least 8 characters"),
        (["node", "--tls-cert", "/nonexistent.pem", "--secret", "s3cret-s3cret"], "--tls-key"),
        (["up", "--nodes", "0"], "between 1 and 32"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_flags_exit_nonzero_with_a_clear_message(args: list[str], message: str) -> None:
    result = run(*args, env={"LLMLAB_MESH_SECRET": ""})
    assert result.returncode != 0
    assert message in result.stderr


def test_missing_secret_is_explained() -> None:
    result = run("node", "--no-mdns", env={"LLMLAB_MESH_SECRET": ""})
    assert result.returncode == 2
    assert "LLMLAB_MESH_SECRET" in result.stderr


def test_client_without_mesh_says_how_to_start_one(tmp_path: Path) -> None:
    result = run("peers", env={"LLMLAB_HOME": str(tmp_path), "LLMLAB_MESH_SECRET": "", "LLMLAB_TARGET": ""})
    assert result.returncode != 0
    assert "llmlab up" in result.stderr


def test_env_and_toml_settings(tmp_path: Path, node_factory) -> None:  # type: ignore[no-untyped-def]
    """The TOML file beats the environment; flags beat both."""
    config = tmp_path / "node.toml"
    config.write_text('[node]\nroles = ["cache", "replica"]\nname = "from-toml"\n')
    node = node_factory("from-flag", "--no-mdns", "--config", str(config), env={"LLMLAB_ROLES": "planner"})
    reply = node.call(node_pb2_grpc.NodeStub, "GetInfo", node_pb2.GetInfoRequest())
    assert reply.info.name == "from-flag"
    assert list(reply.info.roles) == ["cache", "replica"]


def test_up_three_nodes_ready_peers_and_stop(tmp_path: Path) -> None:
    env = {**os.environ, "LLMLAB_HOME": str(tmp_path), "LLMLAB_MESH_SECRET": ""}
    up = subprocess.Popen([*LLMLAB, "up", "--nodes", "3", "--no-mdns"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert up.stdout is not None
        for line in up.stdout:
            lines.append(line.rstrip("\n"))
            if line.strip() == "ready":
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(90), f"no 'ready': {lines} {up.stderr.read() if up.poll() is not None else ''}"
        state_file = tmp_path / "mesh.json"
        assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
        state = json.loads(state_file.read_text())
        assert len(state["secret"]) >= 32
        assert [n["name"] for n in state["nodes"]] == ["node1", "node2", "node3"]
        roles = set().union(*(n["roles"] for n in state["nodes"]))
        assert roles == {"planner", "tools", "llm", "cache", "replica", "bridge"}
        for node in state["nodes"]:
            assert any(line.startswith(node["name"]) and node["address"] in line for line in lines)

        peers = run("peers", "--json", env={"LLMLAB_HOME": str(tmp_path), "LLMLAB_MESH_SECRET": ""})
        assert peers.returncode == 0, peers.stderr
        rows = json.loads(peers.stdout)
        assert {r["name"]: r["roles"] for r in rows} == {n["name"]: n["roles"] for n in state["nodes"]}

        for node in state["nodes"]:
            with grpc.insecure_channel(node["address"]) as channel:
                health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert health.status == health_pb2.HealthCheckResponse.SERVING
                with pytest.raises(grpc.RpcError) as err:
                    node_pb2_grpc.NodeStub(channel).ListPeers(node_pb2.ListPeersRequest(), timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        pids = [n["pid"] for n in state["nodes"]]
    finally:
        up.send_signal(signal.SIGTERM)
        rc = up.wait(timeout=60)
    assert rc == 0
    for pid in pids:
        wait_until(lambda p=pid: not Path(f"/proc/{p}").exists() or _zombie(p), 10, what=f"node pid {pid} to exit")
    assert json.loads((tmp_path / "mesh.json").read_text())["nodes"] == []


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True
