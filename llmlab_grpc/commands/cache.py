"""``llmlab cache stats|get|put|delete|clear``: one node's LLM response cache over gRPC.

``get`` exits 1 on a miss (like ``grep``), so scripts can test for an entry. ``--param
k=v`` sets a generation parameter that is part of the key (``stop`` may repeat).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import grpc

from llmlab_grpc.cache.entry import CacheEntry
from llmlab_grpc.cache.keys import KEY_PARAMS
from llmlab_grpc.client import MeshClient, describe_rpc_error
from llmlab_grpc.commands.common import TIMEOUT_S, UsageError, parse_params
from llmlab_grpc.commands.replication import add_locate_parser, cmd_locate, mesh_default_model
from llmlab_grpc.proto.llmlab.v1 import cache_pb2, cache_pb2_grpc, common_pb2

Handler = Callable[[argparse.Namespace, cache_pb2_grpc.CacheStub, Any], int]


def _lookup(args: argparse.Namespace) -> cache_pb2.CacheLookup:
    if args.prompt is None or not args.model:
        raise UsageError("give --prompt and --model (or --key)")
    return cache_pb2.CacheLookup(prompt=args.prompt, model=args.model, params=parse_params(args.param),
                                 namespace=args.namespace or "")


def _entry_json(entry: common_pb2.CacheEntry) -> dict[str, Any]:
    """The entry with plain JSON numbers (the proto mapping would quote int64) and only set params;
    the embedding as its dimension."""
    row = CacheEntry.from_proto(entry).as_dict()
    row["embedding"] = len(entry.embedding)
    return row


def _stats(args: argparse.Namespace, stub: cache_pb2_grpc.CacheStub, metadata: Any) -> int:
    stats = stub.Stats(cache_pb2.StatsRequest(), metadata=metadata, timeout=TIMEOUT_S).stats
    row = {f.name: getattr(stats, f.name) for f in stats.DESCRIPTOR.fields}  # plain numbers, every field
    if args.json:
        print(json.dumps(row, indent=2))
        return 0
    print(f"store {stats.store}: {stats.entries}/{stats.max_entries} entries, {stats.bytes}/{stats.max_bytes} bytes")
    print(f"hits {stats.hits}  misses {stats.misses}  hit ratio {stats.hit_ratio:.1%}  puts {stats.puts}")
    print(f"evictions {stats.evictions}  expirations {stats.expirations}  replica entries {stats.replica_entries}")
    print(f"replication shortfall {stats.replication_shortfall} (entries short of their N replicas)")
    return 0


def _get(args: argparse.Namespace, stub: cache_pb2_grpc.CacheStub, metadata: Any) -> int:
    if args.max_age is not None and args.max_age < 0:
        raise UsageError("--max-age must be 0 or more seconds")
    request = cache_pb2.GetRequest(read_through=args.read_through, semantic=args.semantic,
                                   max_age_ms=round(args.max_age * 1000) if args.max_age else 0)
    if args.key:
        if args.semantic:
            raise UsageError("--semantic looks up by --prompt and --model, not --key")
        request.key = args.key
    else:
        request.lookup.CopyFrom(_lookup(args))
    if args.semantic:
        request.min_similarity = args.min_similarity or 0.0
        request.candidates = args.candidates
    reply = stub.Get(request, metadata=metadata, timeout=TIMEOUT_S)
    if args.json:
        body: dict[str, Any] = {"found": reply.found}
        if reply.found:
            body.update(entry=_entry_json(reply.entry), source_node_id=reply.source_node_id, match=reply.match)
            if reply.match == "semantic":
                body["similarity"] = round(reply.similarity, 4)
        if reply.candidates:
            body["candidates"] = [{"key": c.key, "semantic_text": c.semantic_text,
                                   "similarity": round(c.similarity, 4), "accepted": c.accepted,
                                   **({"refused_because": c.refused_because} if c.refused_because else {})}
                                  for c in reply.candidates]
        print(json.dumps(body, indent=2, ensure_ascii=False))
        return 0 if reply.found else 1
    for c in reply.candidates:
        verdict = "accepted" if c.accepted else f"refused: {c.refused_because}"
        print(f"candidate {c.similarity:.4f} {c.semantic_text[:60]!r} ({verdict})", file=sys.stderr)
    if reply.found:
        if reply.match == "semantic":
            print(f"llmlab cache: semantic hit, similarity {reply.similarity:.4f}, matched "
                  f"{reply.entry.semantic_text or reply.entry.prompt!r}", file=sys.stderr)
        print(reply.entry.response)
    else:
        print("llmlab cache: miss", file=sys.stderr)
    return 0 if reply.found else 1


def _put(args: argparse.Namespace, stub: cache_pb2_grpc.CacheStub, metadata: Any) -> int:
    if args.ttl is not None and args.ttl <= 0:
        raise UsageError("--ttl must be positive seconds")
    response = sys.stdin.read() if args.response == "-" else args.response
    request = cache_pb2.PutRequest(lookup=_lookup(args), response=response, critical=args.critical,
                                   ttl_ms=round(args.ttl * 1000) if args.ttl else 0, semantic=args.semantic)
    reply = stub.Put(request, metadata=metadata, timeout=TIMEOUT_S)
    if args.json:
        print(json.dumps({"key": reply.key, "entry": _entry_json(reply.entry), "copies": reply.copies,
                          "copies_target": reply.copies_target, "write_acks": reply.write_acks},
                         indent=2, ensure_ascii=False))
    else:
        print(reply.key)
        short = f" (short of the {reply.write_acks} asked for; replication goes on)" \
            if reply.copies < reply.write_acks else ""
        print(f"copies {reply.copies}/{reply.copies_target}{short}", file=sys.stderr)
    return 0


def _delete(args: argparse.Namespace, stub: cache_pb2_grpc.CacheStub, metadata: Any) -> int:
    request = cache_pb2.DeleteRequest()
    if args.key:
        request.key = args.key
    else:
        request.lookup.CopyFrom(_lookup(args))
    reply = stub.Delete(request, metadata=metadata, timeout=TIMEOUT_S)
    if args.json:
        print(json.dumps({"deleted": reply.deleted}))
    else:
        print("deleted" if reply.deleted else "not found")
    return 0 if reply.deleted else 1


def _clear(args: argparse.Namespace, stub: cache_pb2_grpc.CacheStub, metadata: Any) -> int:
    reply = stub.Clear(cache_pb2.ClearRequest(), metadata=metadata, timeout=TIMEOUT_S)
    print(json.dumps({"removed": reply.removed}) if args.json else f"removed {reply.removed} entries")
    return 0


SUBCOMMANDS: dict[str, Handler] = {"stats": _stats, "get": _get, "put": _put, "delete": _delete, "clear": _clear}
"""Subcommand -> handler, each on the Cache service; ``locate`` (the Replica service) is
``commands/replication.py``'s, its parser added in ``_add_parsers`` and dispatched in ``cmd_cache``."""


def _add_lookup_flags(parser: argparse.ArgumentParser, key: bool) -> None:
    parser.add_argument("--prompt", help="the prompt the response answers")
    parser.add_argument("--model", help="the model that produced it")
    parser.add_argument("--param", action="append", metavar="NAME=VALUE",
                        help=f"generation parameter in the key ({', '.join(KEY_PARAMS)}); repeatable")
    parser.add_argument("--namespace", help="cache namespace (part of the key; default: the default namespace)")
    if key:
        parser.add_argument("--key", help="the entry's key (sha256 hex) instead of --prompt/--model/--param")


def _add_parsers(sub: Any, add_client_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    stats = sub.add_parser("stats", help="counters of the node's cache")
    get = sub.add_parser("get", help="print a cached response (exit 1 on a miss)")
    _add_lookup_flags(get, key=True)
    get.add_argument("--read-through", action="store_true", help="on a local miss also ask replicas")
    get.add_argument("--max-age", type=float, help="accept only an entry at most this many seconds old")
    get.add_argument("--semantic", action="store_true",
                     help="on an exact miss, find an entry whose question means the same (guarded); "
                          "--model defaults to the mesh's default model")
    get.add_argument("--min-similarity", type=float, help="similarity threshold (default: the node's)")
    get.add_argument("--candidates", type=int, default=5,
                     help="with --semantic: show this many nearest entries and the guard's verdict (default 5)")
    put = sub.add_parser("put", help="store a response; prints its key")
    _add_lookup_flags(put, key=False)
    put.add_argument("--response", required=True, help="the response text to store; - reads it from stdin")
    put.add_argument("--ttl", type=float, help="time to live, seconds (default: the node's cache_ttl_s)")
    put.add_argument("--critical", action="store_true", help="always replicate this entry")
    put.add_argument("--semantic", action="store_true", help="index the entry for semantic lookups")
    delete = sub.add_parser("delete", help="remove one entry (exit 1 when there was none)")
    _add_lookup_flags(delete, key=True)
    clear = sub.add_parser("clear", help="remove every entry of the node's cache")
    for parser in (stats, get, put, delete, clear):
        add_client_flags(parser)
    add_locate_parser(sub, add_client_flags)


def cmd_cache(args: argparse.Namespace) -> int:
    if args.cache_command == "locate":  # talks to the Replica service: commands/replication.py
        return cmd_locate(args)
    handler = SUBCOMMANDS[args.cache_command]
    client = MeshClient.from_args(args)
    try:
        if args.cache_command == "get" and args.semantic and not args.model and not args.key:
            args.model = mesh_default_model(client)  # `llmlab cache get --semantic --prompt P`
        return handler(args, cache_pb2_grpc.CacheStub(client.channel), client.metadata)
    except UsageError as exc:
        print(f"llmlab cache {args.cache_command}: error: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as err:
        print(describe_rpc_error(err, client.target), file=sys.stderr)
        return 1
    finally:
        client.close()


def add_commands(subparsers: Any, add_client_flags: Callable[[argparse.ArgumentParser], None]
                 ) -> dict[str, Callable[[argparse.Namespace], int]]:
    parser = subparsers.add_parser("cache", help="inspect and fill a node's LLM response cache")
    sub = parser.add_subparsers(dest="cache_command", required=True, metavar="SUBCOMMAND")
    _add_parsers(sub, add_client_flags)
    return {"cache": cmd_cache}
