"""``llmlab tools``, ``llmlab tool NAME --arg k=v``, ``llmlab index PATH``.

``tool`` asks one node (``--target``) whose router runs the call wherever the tool is;
``--arg`` values are parsed as JSON when they parse (``n=5`` is a number, ``flag=true``
a boolean) and are strings otherwise (``expression="25 * 67"``). ``index`` works on
this machine's search index file, which the nodes of a local mesh share.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from llmlab_grpc.client import MeshClient, describe_rpc_error
from llmlab_grpc.commands.common import UsageError
from llmlab_grpc.proto.llmlab.v1 import tool_executor_pb2, tool_executor_pb2_grpc
from llmlab_grpc.tools.convert import from_struct, to_struct

DEFAULT_TIMEOUT_S = 120.0
LIST_TIMEOUT_S = 15.0
SUMMARY_CHARS = 72


def parse_args(pairs: list[str]) -> dict[str, Any]:
    """``["a=1", "b=x y"]`` → ``{"a": 1, "b": "x y"}``: JSON when the value parses, else the text."""
    arguments: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--arg {pair!r}: expected KEY=VALUE")
        if key in arguments:
            raise UsageError(f"--arg {key} is given twice")
        try:
            arguments[key] = json.loads(raw)
        except ValueError:
            arguments[key] = raw
    return arguments


def add_commands(sub: Any, add_client_flags: Callable[[argparse.ArgumentParser], None]
                 ) -> dict[str, Callable[[argparse.Namespace], int]]:
    tools = sub.add_parser("tools", help="list the mesh's tools and the nodes that have them")
    add_client_flags(tools)
    tools.add_argument("--capability", default="", help="only tools with this capability tag, e.g. math")
    tools.add_argument("--local", action="store_true", help="only the target node's own tools")

    tool = sub.add_parser("tool", help="run one tool through the mesh")
    tool.add_argument("name", help="tool name, e.g. calculator (see `llmlab tools`)")
    tool.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                      help="an argument; repeatable; the value is JSON when it parses, else a string")
    tool.add_argument("--node", metavar="NODE_ID", default="", help="run on this node only")
    tool.add_argument("--save-attachments", type=Path, metavar="DIR",
                      help="write binary outputs (e.g. the browser's screenshot.png) into DIR")
    tool.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                      help=f"seconds to wait for the answer (default {DEFAULT_TIMEOUT_S:g})")
    add_client_flags(tool)

    index = sub.add_parser("index", help="add .txt/.md/.html documents to the local web_search index")
    index.add_argument("path", type=Path, help="a folder (searched recursively) or one file")
    index.add_argument("--db", type=Path, help="index file (default LLMLAB_SEARCH_DB or $LLMLAB_HOME/search.db)")
    index.add_argument("--json", action="store_true", help="print JSON")
    return {"tools": cmd_tools, "tool": cmd_tool, "index": cmd_index}


def _spec_json(spec: Any) -> dict[str, Any]:
    return {
        "name": spec.name,
        "description": spec.description,
        "capabilities": list(spec.capabilities),
        "nodes": [{"node_id": i, "name": n} for i, n in zip(spec.node_ids, spec.node_names, strict=False)],
        "timeout_ms": spec.timeout_ms,
        "input_schema": from_struct(spec.input_schema),
        "usage": [{"node_id": u.node_id, "calls": u.calls, "errors": u.errors, "total_ms": round(u.total_ms, 3),
                   "p50_ms": round(u.p50_ms, 3)} for u in spec.usage],
    }


def cmd_tools(args: argparse.Namespace) -> int:
    client = MeshClient.from_args(args)
    try:
        reply = tool_executor_pb2_grpc.ToolExecutorStub(client.channel).ListTools(
            tool_executor_pb2.ListToolsRequest(local_only=args.local, capability=args.capability),
            metadata=client.metadata, timeout=LIST_TIMEOUT_S)
    except grpc.RpcError as err:
        print(describe_rpc_error(err, client.target), file=sys.stderr)
        return 1
    finally:
        client.close()
    rows = [_spec_json(spec) for spec in reply.tools]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no tools" + (f" with capability {args.capability!r}" if args.capability else ""))
        return 0
    width = max(len(r["name"]) for r in rows)
    nodes = [",".join(n["name"] for n in r["nodes"]) or "-" for r in rows]
    node_width = min(40, max(len(n) for n in nodes))
    for row, where in zip(rows, nodes, strict=True):
        calls = sum(u["calls"] for u in row["usage"])
        summary = row["description"].split(". ")[0].rstrip(".")
        summary = summary if len(summary) <= SUMMARY_CHARS else summary[:SUMMARY_CHARS - 1].rstrip() + "…"
        print(f"{row['name']:<{width}}  {where:<{node_width}}  calls {calls:<5}  {summary}")
    return 0


def _save(attachments: list[Any], folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, attachment in enumerate(attachments):
        name = Path(attachment.name).name or f"attachment-{index}"
        path = folder / name
        path.write_bytes(attachment.data)
        paths.append(str(path))
    return paths


def cmd_tool(args: argparse.Namespace) -> int:
    try:
        arguments = parse_args(args.arg)
    except UsageError as exc:
        print(f"llmlab tool: error: {exc}", file=sys.stderr)
        return 2
    client = MeshClient.from_args(args)
    request = tool_executor_pb2.ExecuteRequest(tool=args.name, arguments=to_struct(arguments),
                                               target_node_id=args.node)
    try:
        reply = tool_executor_pb2_grpc.ToolExecutorStub(client.channel).Execute(
            request, metadata=client.metadata, timeout=args.timeout)
    except grpc.RpcError as err:
        print(describe_rpc_error(err, client.target), file=sys.stderr)
        return 1
    finally:
        client.close()
    try:
        paths = _save(list(reply.attachments), args.save_attachments) if args.save_attachments else []
    except OSError as exc:
        print(f"llmlab tool: cannot save attachments: {exc}", file=sys.stderr)
        return 1
    failed = reply.HasField("error")
    attachments: list[dict[str, object]] = [
        {"name": a.name, "mime_type": a.mime_type, "bytes": len(a.data), **({"path": paths[i]} if paths else {})}
        for i, a in enumerate(reply.attachments)
    ]
    body: dict[str, object] = {
        "tool": reply.tool,
        "result": None if failed else from_struct(reply.result),
        "error": {"code": reply.error.code, "message": reply.error.message} if failed else None,
        "node": reply.node_name,
        "node_id": reply.node_id,
        "ms": round(reply.duration_ms, 3),
        "failed_over": list(reply.failed_over),
        "attachments": attachments,
    }
    if args.json:
        print(json.dumps(body, indent=2))
        return 1 if failed else 0
    where = f"on {reply.node_name or reply.node_id or 'no node'}"
    if reply.failed_over:
        where += f" after failing over from {', '.join(reply.failed_over)}"
    if failed:
        print(f"llmlab tool: {args.name} failed {where}: {reply.error.code}: {reply.error.message}", file=sys.stderr)
        return 1
    print(json.dumps(body["result"], indent=2, ensure_ascii=False))
    for item in attachments:
        saved = f" -> {item['path']}" if "path" in item else " (use --save-attachments DIR to keep it)"
        print(f"attachment {item['name']} ({item['mime_type']}, {item['bytes']} bytes){saved}")
    print(f"ran {where} in {reply.duration_ms:.1f} ms")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from llmlab_grpc.tools.search.local import LocalIndex, default_db_path

    index = LocalIndex(args.db or default_db_path())
    try:
        report = index.index(args.path)
    except (FileNotFoundError, sqlite3.Error, OSError) as exc:
        print(f"llmlab index: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"indexed {report.root} into {report.db}: {report.added} added, {report.updated} updated, "
          f"{report.unchanged} unchanged, {report.removed} removed, {report.skipped} skipped; "
          f"{report.documents} documents in the index")
    return 0
