"""Tools across real node processes: discovery of plugins, routing, failover after SIGKILL, the CLI."""

from __future__ import annotations

import functools
import http.server
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from llmlab_grpc.proto.llmlab.v1 import tool_executor_pb2, tool_executor_pb2_grpc
from llmlab_grpc.tools.convert import from_struct, to_struct
from tests.conftest import ARTIFACTS
from tests.helpers import NodeProcess, spawn_node, wait_until
from tests.test_tools_registry import write_plugin_distribution

ROOT = Path(__file__).resolve().parent.parent
Stub = tool_executor_pb2_grpc.ToolExecutorStub


def listed(node: NodeProcess, **request: Any) -> dict[str, Any]:
    try:
        reply = node.call(Stub, "ListTools", tool_executor_pb2.ListToolsRequest(**request), timeout=5.0)
    except grpc.RpcError:
        return {}
    return {t.name: t for t in reply.tools}


def owners(node: NodeProcess, tool: str) -> list[str]:
    spec = listed(node).get(tool)
    return sorted(spec.node_names) if spec is not None else []


def execute(node: NodeProcess, tool: str, **arguments: Any) -> tool_executor_pb2.ExecuteResponse:
    return node.call(Stub, "Execute", tool_executor_pb2.ExecuteRequest(tool=tool, arguments=to_struct(arguments)))


def cli(*args: str, secret: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMLAB_MESH_SECRET": secret, "LLMLAB_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "llmlab_grpc", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60, stdin=subprocess.DEVNULL)


class Mesh:
    """Three tools nodes: a router without tools, and two that have different tools."""

    def __init__(self, tmp: Path) -> None:
        self.secret = secrets.token_urlsafe(24)
        self.home = tmp / "home"
        plugins = tmp / "site"
        write_plugin_distribution(plugins, {"shout": "tests.tool_plugins:ShoutTool"})
        env = {"LLMLAB_HOME": str(self.home)}
        common = ("--roles", "tools", "--no-mdns", "--heartbeat-interval", "0.5")
        self.nodes: list[NodeProcess] = []
        self.router = self._spawn("tm-router", *common, "--tools", "none", env=env)
        seed = ("--peer", self.router.address)
        # tm-b gets the `shout` plugin from an installed distribution's llmlab.tools entry point.
        self.b = self._spawn("tm-b", *common, *seed, "--tools", "calculator,web_search",
                             env={**env, "PYTHONPATH": str(plugins)})
        # tm-c gets its plugins from the module setting, through the environment.
        plugins_env = {"LLMLAB_TOOL_PLUGINS": "tests.tool_plugins:EchoTool,tests.tool_plugins:NapTool"}
        self.c = self._spawn("tm-c", *common, *seed, "--tools", "calculator", env={**env, **plugins_env})

    def _spawn(self, name: str, *args: str, env: dict[str, str]) -> NodeProcess:
        node = spawn_node(name, self.secret, *args, env=env, log_dir=ARTIFACTS)
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(signal.SIGTERM, timeout=10)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    ARTIFACTS.mkdir(exist_ok=True)
    built = Mesh(tmp_path_factory.mktemp("tools-mesh"))
    try:
        wait_until(lambda: {"calculator", "web_search", "shout", "echo", "nap"} <= set(listed(built.router)),
                   timeout=30, what="the router node to list every tool of the mesh")
        yield built
    finally:
        built.stop()


def test_list_tools_shows_every_node_and_plugin(mesh: Mesh) -> None:
    tools = listed(mesh.router)
    assert sorted(tools["calculator"].node_names) == ["tm-b", "tm-c"]
    assert list(tools["web_search"].node_names) == ["tm-b"]
    assert list(tools["shout"].node_names) == ["tm-b"]  # entry-point plugin in a node process
    assert list(tools["echo"].node_names) == ["tm-c"]  # module plugin from LLMLAB_TOOL_PLUGINS
    calc = tools["calculator"]
    assert from_struct(calc.input_schema)["required"] == ["expression"] and calc.timeout_ms == 2000
    assert "math" in calc.capabilities
    assert list(listed(mesh.router, local_only=True)) == []
    assert set(listed(mesh.c, local_only=True)) == {"calculator", "echo", "nap"}
    assert set(listed(mesh.router, capability="math")) == {"calculator"}


def test_routes_to_the_only_node_with_the_tool(mesh: Mesh) -> None:
    echoed = execute(mesh.router, "echo", text="hello")
    assert echoed.node_name == "tm-c" and from_struct(echoed.result) == {"text": "hello"}
    shouted = execute(mesh.router, "shout", text="hello")
    assert shouted.node_name == "tm-b" and from_struct(shouted.result) == {"text": "HELLO"}
    found = execute(mesh.router, "web_search", query="zeroconf multicast", max_results=3)
    assert found.node_name == "tm-b" and not found.HasField("error")
    results = from_struct(found.result)["results"]
    assert results[0]["title"] == "Zeroconf, mDNS and DNS-SD"  # the sample corpus, indexed on first use


def test_status_codes_and_timeouts_through_processes(mesh: Mesh) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        execute(mesh.router, "no_such_tool")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "calculator" in caught.value.details()  # the message lists the tools that exist
    with pytest.raises(grpc.RpcError) as caught:
        execute(mesh.router, "calculator", expression="().__class__")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "attribute access" in caught.value.details()
    timed_out = execute(mesh.router, "nap", seconds=5)
    assert timed_out.error.code == "TIMEOUT" and timed_out.node_name == "tm-c"
    failed = execute(mesh.router, "calculator", expression="1/0")
    assert failed.error.code == "FAILED" and "division by zero" in failed.error.message


def test_cli_tool_and_tools(mesh: Mesh) -> None:
    done = cli("tool", "calculator", "--arg", "expression=25 * 67", "--json", "--target", mesh.router.address,
               secret=mesh.secret, home=mesh.home)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert set(body) >= {"tool", "result", "error", "node", "node_id", "ms", "failed_over"}
    assert body["result"]["result"] == "1675" and body["result"]["value"] == 1675
    assert body["node"] in ("tm-b", "tm-c") and body["error"] is None and body["failed_over"] == []
    plain = cli("tool", "calculator", "--arg", "expression=2 ** 10", "--target", mesh.router.address,
                secret=mesh.secret, home=mesh.home)
    assert plain.returncode == 0 and '"result": "1024"' in plain.stdout and "ran on tm-" in plain.stdout
    failed = cli("tool", "calculator", "--arg", "expression=1/0", "--target", mesh.router.address,
                 secret=mesh.secret, home=mesh.home)
    assert failed.returncode == 1 and "FAILED: division by zero" in failed.stderr
    missing = cli("tool", "nope", "--target", mesh.router.address, secret=mesh.secret, home=mesh.home)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    bad = cli("tool", "echo", "--arg", "oops", "--target", mesh.router.address, secret=mesh.secret, home=mesh.home)
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr
    listing = cli("tools", "--json", "--target", mesh.router.address, secret=mesh.secret, home=mesh.home)
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert sorted(n["name"] for n in rows["calculator"]["nodes"]) == ["tm-b", "tm-c"]
    assert sum(u["calls"] for u in rows["calculator"]["usage"]) >= 1
    table = cli("tools", "--target", mesh.router.address, secret=mesh.secret, home=mesh.home)
    assert table.returncode == 0 and "shout" in table.stdout and "tm-b" in table.stdout


def test_cli_index_then_search(mesh: Mesh, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "llamas.md").write_text("# Llama husbandry\n\nLlamas hum when they are curious.\n")
    done = cli("index", str(docs), "--json", secret=mesh.secret, home=mesh.home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == 1
    found = execute(mesh.router, "web_search", query="why do llamas hum")
    assert from_struct(found.result)["results"][0]["title"] == "Llama husbandry"


def test_failover_when_the_chosen_node_is_killed(tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(24)
    nodes: list[NodeProcess] = []
    home = tmp_path / "home"
    try:
        # With a 5 s heartbeat interval the router counts a silent peer ALIVE for 8 s, so the killed node is
        # still its first choice right after the kill (the point of the test), and listed for 30 s.
        router = spawn_node("fo-a", secret, "--roles", "tools", "--tools", "none", "--no-mdns",
                            "--heartbeat-interval", "5", "--peer-timeout", "30", log_dir=ARTIFACTS,
                            env={"LLMLAB_HOME": str(home)})
        nodes.append(router)
        for name in ("fo-b", "fo-c"):
            nodes.append(spawn_node(name, secret, "--roles", "tools", "--tools", "calculator", "--no-mdns",
                                    "--peer", router.address, log_dir=ARTIFACTS, env={"LLMLAB_HOME": str(home)}))
        wait_until(lambda: owners(router, "calculator") == ["fo-b", "fo-c"], timeout=30, what="both calculator nodes")
        first = execute(router, "calculator", expression="6 * 7")
        assert first.node_name == "fo-b" and list(first.failed_over) == []  # equal load: by name
        nodes[1].stop(signal.SIGKILL)
        after = execute(router, "calculator", expression="6 * 7")
        assert after.node_name == "fo-c" and from_struct(after.result)["result"] == "42"
        assert list(after.failed_over) == ["fo-b"]
    finally:
        for node in nodes:
            node.stop(signal.SIGTERM, timeout=10)


@pytest.mark.browser
def test_cli_browser_through_the_mesh(tmp_path: Path) -> None:
    from llmlab_grpc.tools.builtin.browser import chromium_available

    if not chromium_available():
        pytest.skip("needs Debian's Chromium at /usr/bin/chromium")
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html><head><title>Tools mesh page</title></head>"
                                     "<body><p>Hello from 127.0.0.1</p><a href='/next.html'>next</a></body></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    secret = secrets.token_urlsafe(24)
    home = tmp_path / "home"
    nodes: list[NodeProcess] = []
    try:
        router = spawn_node("br-a", secret, "--roles", "tools", "--tools", "none", "--no-mdns", log_dir=ARTIFACTS,
                            env={"LLMLAB_HOME": str(home)})
        nodes.append(router)
        nodes.append(spawn_node("br-b", secret, "--roles", "tools", "--tools", "browser", "--allow-private-urls",
                                "--no-mdns", "--peer", router.address, log_dir=ARTIFACTS,
                                env={"LLMLAB_HOME": str(home)}))
        wait_until(lambda: owners(router, "browser") == ["br-b"], timeout=30, what="the browser node")
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        shots = tmp_path / "shots"
        done = cli("tool", "browser", "--arg", f"url={url}", "--arg", "screenshot=true", "--json",
                   "--save-attachments", str(shots), "--target", router.address, secret=secret, home=home)
        assert done.returncode == 0, done.stdout + done.stderr
        body = json.loads(done.stdout)
        assert body["node"] == "br-b" and body["result"]["title"] == "Tools mesh page"
        assert body["attachments"][0]["name"] == "screenshot.png"
        assert (shots / "screenshot.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    finally:
        for node in nodes:
            node.stop(signal.SIGTERM, timeout=10)
        server.shutdown()
        server.server_close()
