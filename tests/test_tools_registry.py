"""ToolRegistry: run-time registration, plugins (entry points and modules), queries, stats, specs, timeouts."""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmlab_grpc.tools.base import InvalidArguments
from llmlab_grpc.tools.convert import from_struct, to_struct
from llmlab_grpc.tools.registry import (
    ENTRY_POINT_GROUP,
    ToolNotFound,
    ToolRegistry,
    builtin_tools,
    entry_point_tools,
    instantiate,
    module_tools,
)
from tests.tool_plugins import BrokenTool, EchoTool, NapTool, RefusingTool, ShoutTool, SleepyTool


def test_register_query_unregister() -> None:
    registry = ToolRegistry()
    changes: list[list[str]] = []
    registry.subscribe(lambda: changes.append(registry.names()))
    registry.register(EchoTool())
    registry.register(NapTool())
    assert registry.names() == ["echo", "nap"] and "echo" in registry and len(registry) == 2
    assert [t.name for t in registry.with_capability("text")] == ["echo"]
    assert [t.name for t in registry.with_capability("test")] == ["echo", "nap"]
    assert registry.with_capability("nothing") == []
    with pytest.raises(ValueError, match="already registered"):
        registry.register(EchoTool())
    replacement = EchoTool()
    registry.register(replacement, replace=True)
    assert registry.get("echo") is replacement
    assert registry.unregister("echo") is replacement
    assert registry.unregister("echo") is None
    assert changes == [["echo"], ["echo", "nap"], ["echo", "nap"], ["nap"]]


def test_names_and_types_are_checked() -> None:
    registry = ToolRegistry()
    bad = EchoTool()
    bad.name = "Bad Name!"  # type: ignore[misc]
    with pytest.raises(ValueError, match="must match"):
        registry.register(bad)
    with pytest.raises(TypeError):
        registry.register("echo")  # type: ignore[arg-type]


async def test_stats_count_calls_errors_and_latency() -> None:
    registry = ToolRegistry()
    for tool in (EchoTool(), RefusingTool(), BrokenTool()):
        registry.register(tool)
    for _ in range(3):
        assert (await registry.run("echo", {"text": "hi"})).result == {"text": "hi"}
    with pytest.raises(InvalidArguments, match="text"):
        await registry.run("echo", {})
    refused = await registry.run("refusing", {"text": "x"})
    assert refused.error is not None and (refused.error.code, refused.error.message) == ("REFUSED", "not today")
    broken = await registry.run("broken", {"text": "x"})
    assert broken.error is not None and broken.error.code == "FAILED" and "KeyError" in broken.error.message
    echo = registry.stats("echo")
    assert (echo.calls, echo.errors) == (4, 1)
    assert echo.total_ms >= echo.p50_ms > 0
    assert registry.all_stats()["refusing"]["errors"] == 1
    usage = registry.stats("echo").to_proto("n1")
    assert (usage.node_id, usage.calls, usage.errors) == ("n1", 4, 1)
    with pytest.raises(ToolNotFound, match="it has: broken, echo, refusing"):
        await registry.run("nope", {})


async def test_tool_timeout_is_an_error_result() -> None:
    registry = ToolRegistry()
    registry.register(NapTool())
    outcome = await registry.run("nap", {"seconds": 5})
    assert outcome.error is not None and outcome.error.code == "TIMEOUT"
    assert "0.5 s" in outcome.error.message
    assert (await registry.run("nap", {"seconds": 0})).ok


def test_specs_publish_json_schema() -> None:
    registry = ToolRegistry()
    registry.register(EchoTool())
    spec = registry.spec("echo", "n1", "node one")
    assert (spec.name, spec.description, list(spec.capabilities)) == ("echo", "Echo the text back.", ["test", "text"])
    schema = from_struct(spec.input_schema)
    assert schema["properties"]["text"]["maxLength"] == 100 and schema["required"] == ["text"]
    assert from_struct(spec.output_schema)["required"] == ["text"]
    assert spec.timeout_ms == 5000
    assert (list(spec.node_ids), list(spec.node_names)) == (["n1"], ["node one"])
    assert [s.name for s in registry.specs("text")] == ["echo"] and registry.specs("math") == []


async def test_add_starts_and_remove_closes() -> None:
    events: list[str] = []

    class Lifecycle(EchoTool):
        name = "lifecycle"

        async def start(self) -> None:
            events.append("start")

        async def close(self) -> None:
            events.append("close")

    registry = ToolRegistry()
    await registry.add(Lifecycle())
    assert "lifecycle" in registry
    assert await registry.remove("lifecycle")
    assert not await registry.remove("lifecycle")
    assert events == ["start", "close"]


def test_instantiate_prefers_from_settings() -> None:
    class Configured(SleepyTool):
        @classmethod
        def from_settings(cls, settings: object) -> Configured:
            return cls(delay_s=settings.delay)  # type: ignore[attr-defined]

    tool = instantiate(Configured, SimpleNamespace(delay=2.5))
    assert isinstance(tool, Configured) and tool.delay_s == 2.5
    assert isinstance(instantiate(EchoTool), EchoTool)
    with pytest.raises(TypeError):
        instantiate(dict)


def test_module_plugins(caplog: pytest.LogCaptureFixture) -> None:
    assert [t.name for t in module_tools(["tests.tool_plugins:ShoutTool"])] == ["shout"]
    everything = {t.name for t in module_tools(["tests.tool_plugins"])}
    assert {"echo", "shout", "nap", "sleepy", "broken", "refusing", "attach"} <= everything
    with caplog.at_level(logging.ERROR):
        assert module_tools(["tests.no_such_module", "tests.tool_plugins:Missing"]) == []
    assert "tests.no_such_module" in caplog.text and "Missing" in caplog.text


def write_plugin_distribution(root: Path, entries: dict[str, str]) -> None:
    """A minimal installed distribution (a .dist-info folder) declaring ``llmlab.tools`` entry points."""
    info = root / "llmlab_test_tools-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: llmlab-test-tools\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")


def test_entry_point_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    write_plugin_distribution(tmp_path, {"shout": "tests.tool_plugins:ShoutTool", "bad": "tests.nowhere:Nope"})
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert any(ep.name == "shout" for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    with caplog.at_level(logging.WARNING):
        tools = entry_point_tools()
    assert [t.name for t in tools] == ["shout"] and isinstance(tools[0], ShoutTool)
    assert "bad" in caplog.text  # a broken plugin is reported, not fatal


def test_builtins_load_by_name() -> None:
    settings = SimpleNamespace(search_backend="", search_url="", search_db=None, search_timeout_s=1.0,
                               search_retries=0, allow_private_urls=False)
    names = [t.name for t in builtin_tools(["calculator", "web_search"], settings)]
    assert names == ["calculator", "web_search"]
    assert builtin_tools(["no_such_builtin"], settings) == []


def test_struct_round_trip_keeps_integers() -> None:
    data = {"n": 5, "f": 2.5, "big": 2**60, "nested": {"xs": [1, 2.0, "3"]}, "none": None, "inf": float("inf")}
    back = from_struct(to_struct(data))
    assert back["n"] == 5 and isinstance(back["n"], int)
    assert back["f"] == 2.5 and back["nested"] == {"xs": [1, 2, "3"]} and back["none"] is None
    assert isinstance(back["big"], float)  # beyond 2**53 a double is not exact: send such values as text
    assert back["inf"] is None
