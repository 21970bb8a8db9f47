"""``llmlab cache locate``: which nodes hold a cache entry, its primary first, from ``Replica.Locate``.

By default the entry is named the way the planner names it, so ``llmlab cache locate
--prompt "Tell me a joke"`` finds what ``llmlab ask "Tell me a joke"`` cached: the
prompt is the question (stripped; with a system prompt, the planner's conversation
form), the params get the planner's defaults (``effective_params``: temperature 0.7
and seed 42 unless a temperature or a seed is given), and the model defaults to the
mesh's default model (the target's first model, else the first ``llm`` peer's).
``--as-given`` uses the prompt and params exactly as typed, i.e. the key ``llmlab cache
put`` made; ``--key`` names the entry by its key.

The subcommand lives under ``llmlab cache`` (``commands/cache.py`` adds the parser and
dispatches here; what both share is in ``commands/common.py``). Exit status: 0 when some
node holds the entry, 1 when none does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import grpc

from llmlab_grpc.client import MeshClient, describe_rpc_error
from llmlab_grpc.commands.common import TIMEOUT_S, UsageError, parse_params
from llmlab_grpc.proto.llmlab.v1 import common_pb2, node_pb2, node_pb2_grpc, planner_pb2, replica_pb2, replica_pb2_grpc

LOCATE_TIMEOUT_S = 15.0
DESCRIPTION = """\
Print the nodes that hold a cache entry, the primary first, then its replicas.

By default the entry is named as `llmlab ask` names it: the prompt is the question,
the params get the planner's defaults (temperature 0.7 and seed 42 unless you give a
temperature or a seed), and the model is the mesh's default model. So
`llmlab cache locate --prompt "Tell me a joke"` finds what `llmlab ask "Tell me a joke"`
cached. Use --as-given for the key `llmlab cache put` made from the same flags, or --key.
Exit status: 0 when some node holds the entry, 1 when none does."""


def planner_lookup(prompt: str, params: common_pb2.GenerationParams) -> tuple[str, common_pb2.GenerationParams]:
    """The (cache prompt, params) the planner uses for a single-turn question ``prompt``."""
    from llmlab_grpc.planner.planner import effective_params
    from llmlab_grpc.planner.workflow import cache_prompt

    text = prompt.strip()
    effective = effective_params(planner_pb2.Query(text=text, params=params))
    messages = []
    if params.system_prompt:
        messages.append(common_pb2.ChatMessage(role="system", content=params.system_prompt))
    messages.append(common_pb2.ChatMessage(role="user", content=text))
    return cache_prompt(messages), effective


def mesh_default_model(client: MeshClient) -> str:
    """The model the planner of the target would pick: its own first, else the first llm peer's."""
    reply = node_pb2_grpc.NodeStub(client.channel).ListPeers(
        node_pb2.ListPeersRequest(), metadata=client.metadata, timeout=TIMEOUT_S)
    if reply.self.models:
        return reply.self.models[0]
    for peer in sorted(reply.peers, key=lambda p: p.info.name):
        if "llm" in peer.info.roles and peer.info.models:
            return peer.info.models[0]
    return ""


def locate_request(args: argparse.Namespace, client: MeshClient) -> replica_pb2.LocateRequest:
    if args.key:
        return replica_pb2.LocateRequest(key=args.key)
    if args.prompt is None:
        raise UsageError("give --prompt (and optionally --model), or --key")
    params = parse_params(args.param)
    prompt = args.prompt
    if not args.as_given:
        prompt, params = planner_lookup(prompt, params)
    model = args.model or mesh_default_model(client)
    if not model:
        raise UsageError("no --model given and no llm node announces a model: pass --model")
    return replica_pb2.LocateRequest(prompt=prompt, model=model, params=params, namespace=args.namespace or "")


def holders(reply: replica_pb2.LocateResponse) -> list[replica_pb2.NodeRef]:
    """The nodes holding a copy, the primary first."""
    return ([reply.primary] if reply.HasField("primary") else []) + list(reply.replicas)


def cmd_locate(args: argparse.Namespace) -> int:
    client = MeshClient.from_args(args)
    try:
        request = locate_request(args, client)
        reply = replica_pb2_grpc.ReplicaStub(client.channel).Locate(
            request, metadata=client.metadata, timeout=LOCATE_TIMEOUT_S)
    except UsageError as exc:
        print(f"llmlab cache locate: error: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as err:
        if getattr(err, "code", lambda: None)() == grpc.StatusCode.UNIMPLEMENTED:
            print(f"llmlab: {client.target} has no replica role; --target a node started with --roles ...,replica",
                  file=sys.stderr)
            return 1
        print(describe_rpc_error(err, client.target), file=sys.stderr)
        return 1
    finally:
        client.close()
    found = holders(reply)
    if args.json:
        print(json.dumps([n.name or n.node_id for n in found]))
        return 0 if found else 1
    if not found:
        print(f"llmlab cache locate: no node holds entry {reply.key}", file=sys.stderr)
        return 1
    print(f"key {reply.key}")
    for ref in found:
        role = "primary" if reply.HasField("primary") and ref.node_id == reply.primary.node_id else "replica"
        print(f"{role:<8} {ref.name or ref.node_id:<20} {ref.address}")
    if reply.placement:
        print("placement now: " + ", ".join(n.name or n.node_id for n in reply.placement))
    return 0


def add_locate_parser(sub: Any, add_client_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    locate = sub.add_parser("locate", help="which nodes hold an entry: primary and replicas (exit 1: none)",
                            description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    locate.add_argument("--prompt", help="the question as given to `llmlab ask` (or the raw prompt with --as-given)")
    locate.add_argument("--model", help="the model (default: the mesh's default model, as the planner picks it)")
    locate.add_argument("--param", action="append", metavar="NAME=VALUE",
                        help="generation parameter in the key (e.g. temperature=0, seed=7); repeatable")
    locate.add_argument("--as-given", action="store_true",
                        help="use --prompt/--param exactly as given (the key `llmlab cache put` made), "
                             "without the planner's defaults")
    locate.add_argument("--namespace", help="cache namespace (part of the key; default: the default namespace)")
    locate.add_argument("--key", help="the entry's key (sha256 hex) instead of --prompt")
    add_client_flags(locate)
