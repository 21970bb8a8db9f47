"""The ``llmlab`` command: ``node``, ``up``, ``peers`` (more commands arrive with their features)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from pydantic import ValidationError
from pydantic_settings import SettingsError

from llmlab_grpc import ROLES, __version__
from llmlab_grpc.client import MeshClient, describe_rpc_error
from llmlab_grpc.config import ConfigError, NodeSettings
from llmlab_grpc.errors import StartupError
from llmlab_grpc.proto.llmlab.v1 import common_pb2, node_pb2, node_pb2_grpc


def _add_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help="node to ask, HOST:PORT (default: first node of the state file)")
    parser.add_argument("--secret", help="mesh secret (default: LLMLAB_MESH_SECRET or the state file)")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (PEM) for a TLS mesh")
    parser.add_argument("--tls-key", type=Path, help="client key (PEM) for a TLS mesh")
    parser.add_argument("--tls-ca", type=Path, help="CA (PEM) that signed the nodes' certificates")
    parser.add_argument("--json", action="store_true", help="print JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmlab", description="A peer-to-peer mesh that shares LLM work.")
    parser.add_argument("--version", action="version", version=f"llmlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    node = sub.add_parser("node", help="run one node in the foreground")
    node.add_argument("--name", help="node name, unique in the mesh")
    node.add_argument("--node-id", help="stable node id (default: the name)")
    node.add_argument("--roles", help=f"comma-separated roles from: {','.join(ROLES)} (default: all)")
    node.add_argument("--host", help="address to bind (default 0.0.0.0)")
    node.add_argument("--port", type=int, help="gRPC port (default 0: any free port)")
    node.add_argument("--advertise-host", help="host peers should dial (default: bind host or LAN address)")
    node.add_argument("--secret", help="mesh secret (or LLMLAB_MESH_SECRET)")
    node.add_argument("--peer", action="append", dest="peers", metavar="HOST:PORT",
                      help="static peer seed; repeatable; the node's own address is ignored")
    node.add_argument("--no-mdns", action="store_true", help="no zeroconf: static peers only")
    node.add_argument("--mdns-interface", help="bind zeroconf to this address only (e.g. 127.0.0.1)")
    node.add_argument("--heartbeat-interval", type=float, dest="heartbeat_interval_s", help="seconds")
    node.add_argument("--peer-timeout", type=float, dest="peer_timeout_s", help="seconds without news")
    node.add_argument("--tls-cert", type=Path, help="server/client certificate (PEM)")
    node.add_argument("--tls-key", type=Path, help="private key (PEM)")
    node.add_argument("--tls-ca", type=Path, help="CA (PEM): enables mTLS")
    node.add_argument("--state-dir", type=Path,
                      help="this node's own state, e.g. the last known models (default $LLMLAB_HOME/nodes/<node id>)")
    node.add_argument("--config", type=Path, help="TOML file ([node] table); or LLMLAB_CONFIG")
    node.add_argument("--http-port", type=int, help="HTTP port of the bridge role (default 0: any free port)")
    node.add_argument("--http-host", help="address the bridge's HTTP server binds (default: --host)")
    node.add_argument("--bridge-origin", action="append", dest="bridge_allowed_origins", metavar="ORIGIN",
                      help="extra Origin allowed on /ws/task, e.g. http://box.local:8080; repeatable")
    node.add_argument("--http-header-timeout", type=float, dest="http_header_timeout_s",
                      help="seconds a client has to send complete request headers (default 10)")
    node.add_argument("--http-idle-timeout", type=float, dest="http_idle_timeout_s",
                      help="seconds an HTTP connection may stay silent (default 15)")
    node.add_argument("--http-max-connections", type=int,
                      help="open HTTP and WebSocket connections at most (default 512)")
    node.add_argument("--ray-address", help="join this Ray cluster HOST:PORT (default: the node's own local Ray)")
    node.add_argument("--llm-backend", choices=["llama_cpp", "ollama", "openai"],
                      help="runtime of the llm role (default llama_cpp: the embedded model)")
    node.add_argument("--llm-models", help="comma-separated models to serve (default: smollm2-135m for llama_cpp)")
    node.add_argument("--ollama-url", help="Ollama server for --llm-backend ollama (default http://127.0.0.1:11434)")
    node.add_argument("--openai-url", help="OpenAI-compatible server for --llm-backend openai (key: env only)")
    node.add_argument("--max-tokens-default", type=int, help="max_tokens of a request that sets none (default 256)")
    node.add_argument("--max-tokens-limit", type=int, help="largest max_tokens a request may ask (default 2048)")
    node.add_argument("--llm-max-queued", type=int, help="generations queued per model before RESOURCE_EXHAUSTED")
    node.add_argument("--first-token-timeout", type=float, dest="first_token_timeout_s",
                      help="planner: seconds to wait for an llm node's first piece before the next (default 20)")
    node.add_argument("--llm-threads", type=int, help="llama.cpp CPU threads (default 0: min(cores, 4))")
    node.add_argument("--cache-store", choices=["ray", "memory"],
                      help="where the cache role keeps responses (default ray: Ray's object store)")
    node.add_argument("--cache-ttl", type=float, dest="cache_ttl_s", help="cache entry time to live, s (default 3600)")
    node.add_argument("--cache-max-bytes", type=int,
                      help="cache byte budget, every stored byte counted, LRU beyond (default 256 MiB)")
    node.add_argument("--cache-max-entries", type=int, help="cache entry cap, LRU beyond (default 100000)")
    node.add_argument("--cache-max-value-bytes", type=int, help="largest cached response, bytes (default 1 MiB)")
    node.add_argument("--semantic-cache", action="store_true", default=None,
                      help="semantic cache lookups and stores for every query this node plans (docs/cache.md)")
    node.add_argument("--semantic-embed-threads", type=int,
                      help="CPU threads of the semantic cache's embedding model (default 0: idle cores, per question)")
    node.add_argument("--semantic-min-similarity", type=float,
                      help="similarity threshold of a semantic hit (default 0.9; the guard applies too)")
    node.add_argument("--bridge-sync-namespaces", metavar="NAMES",
                      help="cache namespaces synced to paired phones, comma-separated; * = all (default), "
                           "default = the default namespace")
    node.add_argument("--bridge-sync-private", action="store_true", default=None,
                      help="also sync entries stored with per-user API keys to paired phones (default: never)")
    node.add_argument("--cache-hot-bytes", type=int,
                      help="ray store: in-process copies of hot values, bytes (default 32 MiB; 0: every hit reads Ray)")
    node.add_argument("--cache-max-prompt-bytes", type=int, help="largest cached prompt, bytes (default 1 MiB)")
    node.add_argument("--cache-max-params-bytes", type=int,
                      help="largest cached params (tools_json, system prompt, stop), bytes (default 256 KiB)")
    node.add_argument("--cache-max-ttl", type=float, dest="cache_max_ttl_s",
                      help="longest time to live of a cache entry, s; longer ones are capped (default 30 days)")
    node.add_argument("--allow-private-urls", action="store_true", default=None,
                      help="browser tool may open loopback/private/link-local addresses (LAN pages, tests)")
    node.add_argument("--tools", dest="builtin_tools", metavar="NAMES",
                      help="built-in tools to load: calculator,web_search,browser, all (default) or none")
    node.add_argument("--tool-plugin", action="append", dest="tool_plugins", metavar="MODULE[:CLASS]",
                      help="load Tool classes from this module; repeatable (also LLMLAB_TOOL_PLUGINS)")
    node.add_argument("--search-backend", choices=["local", "searxng"],
                      help="web_search backend (default: searxng when --search-url is set, else local)")
    node.add_argument("--search-url", help="SearxNG base URL for web_search (or LLMLAB_SEARCH_URL)")
    node.add_argument("--search-db", type=Path, help="local search index file (default $LLMLAB_HOME/search.db)")
    node.add_argument("--planner-tasks-max-bytes", type=int,
                      help="bytes of tasks a planner keeps for ListTasks (default 64 MiB; also at most 500 tasks)")
    node.add_argument("--replicas", type=int, dest="replica_count",
                      help="replicas per cache entry besides its primary (default 2; 0 turns replication off)")
    node.add_argument("--replication-queue", type=int, help="puts waiting to be replicated (default 1024)")
    node.add_argument("--replication-retry", type=float, dest="replication_retry_s",
                      help="seconds between retries of entries short of their replicas (default 5)")
    node.add_argument("--anti-entropy", type=float, dest="anti_entropy_s",
                      help="seconds between anti-entropy rounds with each replica peer (default 30)")
    node.add_argument("--write-acks", metavar="W",
                      help="copies verified before a put returns, this node's included: 1, 2 (default), ... or all")
    node.add_argument("--api-keys-file", type=Path,
                      help="API key digests for the /v1 API (default $LLMLAB_HOME/api_keys.json)")
    node.add_argument("--api-max-body-bytes", type=int, help="largest /v1 request body, bytes (default 1 MiB)")
    node.add_argument("--api-timeout", type=float, dest="api_timeout_s",
                      help="seconds a /v1 request may take before 504 (default 300)")
    node.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    up = sub.add_parser("up", help="start a whole mesh on this machine and wait")
    up.add_argument("--nodes", type=int, default=3, help="number of node processes (default 3)")
    up.add_argument("--no-mdns", action="store_true", help="no zeroconf: nodes find each other by seeds")
    up.add_argument("--mdns-interface", default="127.0.0.1",
                    help="zeroconf interface for the local mesh (default 127.0.0.1: never the LAN)")
    up.add_argument("--allow-private-urls", action="store_true",
                    help="let the browser tool open loopback/private addresses (pages on this machine)")

    peers = sub.add_parser("peers", help="show a node's peer table")
    _add_client_flags(peers)
    for module in FEATURE_COMMANDS:
        COMMANDS.update(importlib.import_module(module).add_commands(sub, _add_client_flags))
    return parser


def _node_settings(args: argparse.Namespace) -> NodeSettings:
    if args.config is not None:
        import os

        os.environ["LLMLAB_CONFIG"] = str(args.config)
    # A flag whose dest names a setting overrides it when given (flags default to None).
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if k in NodeSettings.model_fields and v is not None}
    if args.secret is not None:
        given["mesh_secret"] = args.secret
    if args.no_mdns:
        given["mdns"] = False
    settings = NodeSettings(**given)
    settings.check()
    return settings


def cmd_node(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("zeroconf").setLevel(logging.WARNING)
    try:
        settings = _node_settings(args)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'setting'}: {e['msg']}" for e in exc.errors())
        print(f"llmlab node: error: {problems}", file=sys.stderr)
        return 2
    except (ConfigError, SettingsError) as exc:
        print(f"llmlab node: error: {exc}", file=sys.stderr)
        return 2

    from llmlab_grpc.allocator import return_large_buffers_to_os
    from llmlab_grpc.node import LlmlabNode

    return_large_buffers_to_os()  # a refused 16 MB request must not stay in the node's RSS
    node = LlmlabNode(settings)

    def ready(address: str) -> None:
        print(f"llmlab node {settings.name} listening on {address} roles={','.join(settings.roles)} "
              f"addresses={','.join(node.addresses)}", flush=True)

    try:
        asyncio.run(node.serve_forever(on_ready=ready))
    except StartupError as exc:
        print(f"llmlab node: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ConfigError) as exc:
        print(f"llmlab node: error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from llmlab_grpc.launcher import run_up

    if args.nodes < 1 or args.nodes > 32:
        print("llmlab up: error: --nodes must be between 1 and 32", file=sys.stderr)
        return 2
    extra = ["--allow-private-urls"] if args.allow_private_urls else []
    return run_up(args.nodes, mdns=not args.no_mdns, mdns_interface=args.mdns_interface, extra_args=extra)


def _state_name(state: int) -> str:
    return common_pb2.PeerState.Name(state).removeprefix("PEER_STATE_").lower().replace("_", "-")


def cmd_peers(args: argparse.Namespace) -> int:
    client = MeshClient.from_args(args)
    try:
        reply = node_pb2_grpc.NodeStub(client.channel).ListPeers(
            node_pb2.ListPeersRequest(), metadata=client.metadata, timeout=5.0)
    except grpc.RpcError as err:
        print(describe_rpc_error(err, client.target), file=sys.stderr)
        return 1
    finally:
        client.close()
    rows = [{"name": reply.self.name, "node_id": reply.self.node_id, "address": reply.self.address,
             "addresses": list(reply.self.addresses), "roles": list(reply.self.roles), "state": "self",
             "last_seen": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "detail": ""}]
    for peer in reply.peers:
        rows.append({
            "name": peer.info.name, "node_id": peer.info.node_id, "address": peer.info.address,
            "addresses": list(peer.info.addresses), "roles": list(peer.info.roles), "state": _state_name(peer.state),
            "last_seen": peer.last_seen.ToDatetime(dt.UTC).isoformat(timespec="milliseconds"),
            "detail": peer.detail,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        # The address in use first; the other announced ones after it; a one-way link says why.
        others = [a for a in r["addresses"] if a != r["address"]]
        shown = r["address"] or ("(mobile)" if not r["addresses"] else "(none works)")
        line = f"{r['name']:<{width}}  {shown:<21}  {r['state']:<8}  {','.join(r['roles'])}"
        if others:
            line += f"  also: {','.join(others)}"
        if r["detail"]:
            line += f"  [{r['detail']}]"
        print(line)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"node": cmd_node, "up": cmd_up, "peers": cmd_peers}

FEATURE_COMMANDS: list[str] = [
    # Modules with ``add_commands(subparsers, add_client_flags) -> {name: handler}``; one line per feature.
    "llmlab_grpc.commands.cache",
    "llmlab_grpc.commands.ask",
    "llmlab_grpc.commands.tools",
    "llmlab_grpc.commands.apikey",
    "llmlab_grpc.commands.metrics",
    "llmlab_grpc.commands.dashboard",
    "llmlab_grpc.commands.doctor",
]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
