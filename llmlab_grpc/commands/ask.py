"""``llmlab ask`` and ``llmlab tasks``: questions to the mesh's planner, and its recent tasks."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import grpc

from llmlab_grpc.client import MeshClient, describe_rpc_error
from llmlab_grpc.proto.llmlab.v1 import planner_pb2, planner_pb2_grpc

ASK_TIMEOUT_S = 600.0


def step_row(step: planner_pb2.Step) -> dict[str, Any]:
    """One trace row as --json prints it."""
    return {
        "kind": planner_pb2.StepKind.Name(step.kind).removeprefix("STEP_KIND_").lower(),
        "name": step.name,
        "node": step.node_name or step.node_id,
        "cache": planner_pb2.CacheOutcome.Name(step.cache).removeprefix("CACHE_OUTCOME_").lower(),
        "reason": step.reason,
        "ms": round(step.duration_ms, 2),
        **({"error": step.error} if step.error else {}),
        **({"failed_over": list(step.failed_over)} if step.failed_over else {}),
        **({"copies": f"{step.cache_copies}/{step.cache_copies_target}"} if step.cache_copies else {}),
        **({"cache_match": {"matched_prompt": step.cache_match.matched_prompt,
                            "similarity": round(step.cache_match.similarity, 4), "key": step.cache_match.key,
                            "namespace": step.cache_match.namespace}} if step.HasField("cache_match") else {}),
    }


def task_json(task: planner_pb2.Task) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "query": task.query.text,
        "status": planner_pb2.TaskStatus.Name(task.status).removeprefix("TASK_STATUS_").lower(),
        "answer": task.answer,
        "steps": [step_row(s) for s in task.steps],
        "total_ms": round(task.total_ms, 2),
        **({"error": task.error} if task.error else {}),
    }


def build_query(args: argparse.Namespace) -> planner_pb2.Query:
    query = planner_pb2.Query(text=args.question, model=args.model or "", no_cache=args.no_cache,
                              no_store=args.no_store, no_tools=args.no_tools,
                              cache_nondeterministic=args.cache_random)
    if args.max_tokens is not None:
        query.params.max_tokens = args.max_tokens
    if args.temperature is not None:
        query.params.temperature = args.temperature
    if args.top_p is not None:
        query.params.top_p = args.top_p
    if args.seed is not None:
        query.params.seed = args.seed
    if args.system:
        query.params.system_prompt = args.system
    for stop in args.stop or []:
        query.params.stop.append(stop)
    if args.namespace:
        query.cache.namespace = args.namespace
    if args.ttl is not None:
        query.cache.ttl_s = args.ttl
    if args.max_age is not None:
        query.cache.max_age_s = args.max_age
    if args.semantic is not None:
        query.cache.semantic = args.semantic
    if args.min_similarity is not None:
        query.cache.min_similarity = args.min_similarity
    return query


def print_trace(task: planner_pb2.Task) -> None:
    for row in task_json(task)["steps"]:
        extra = f" error: {row['error']}" if "error" in row else ""
        cache = f"{row['cache']}, copies {row['copies']}" if "copies" in row else row["cache"]
        print(f"  [{row['kind']} {row['name']} on {row['node'] or '?'}, cache {cache}, "
              f"{row['ms']:.0f} ms] {row['reason']}{extra}", file=sys.stderr)


def cmd_ask(args: argparse.Namespace) -> int:
    client = MeshClient.from_args(args)
    stub = planner_pb2_grpc.PlannerStub(client.channel)
    query = build_query(args)
    try:
        if args.stream:
            task = None
            for event in stub.AskStream(planner_pb2.AskStreamRequest(query=query), metadata=client.metadata,
                                        timeout=ASK_TIMEOUT_S):
                kind = event.WhichOneof("event")
                if kind == "token" and not args.json:
                    print(event.token.text, end="", flush=True)
                elif kind == "tool_result" and not args.json:
                    pass
                elif kind == "final":
                    task = event.final
            assert task is not None
            if not args.json:
                if not any(s.kind == planner_pb2.STEP_KIND_LLM for s in task.steps):
                    print(task.answer, end="")
                print()
        else:
            task = stub.Ask(planner_pb2.AskRequest(query=query), metadata=client.metadata,
                            timeout=ASK_TIMEOUT_S).task
            if not args.json:
                print(task.answer)
    except grpc.RpcError as err:
        print(describe_rpc_error(err, client.target), file=sys.stderr)
        return 1
    finally:
        client.close()
    if args.json:
        print(json.dumps(task_json(task), indent=2, ensure_ascii=False))
    elif args.trace:
        print_trace(task)
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    client = MeshClient.from_args(args)
    stub = planner_pb2_grpc.PlannerStub(client.channel)
    tasks: list[planner_pb2.Task] = []
    token = ""
    try:
        for _ in range(max(1, args.limit)):  # pages, each within the planner's byte budget, until --limit
            reply = stub.ListTasks(planner_pb2.ListTasksRequest(page_size=min(500, args.limit - len(tasks)),
                                                                page_token=token),
                                   metadata=client.metadata, timeout=10)
            tasks.extend(reply.tasks)
            token = reply.next_page_token
            if not token or not reply.tasks or len(tasks) >= args.limit:
                break
    except grpc.RpcError as err:
        print(describe_rpc_error(err, client.target), file=sys.stderr)
        return 1
    finally:
        client.close()
    rows = [task_json(t) for t in tasks]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for row in rows:
        tools = ",".join(f"{s['name']}@{s['node']}" for s in row["steps"])
        answer = row["answer"].replace("\n", " ")
        print(f"{row['task_id']}  {row['status']:<9} {row['total_ms']:>8.0f} ms  {tools:<40} "
              f"{row['query'][:40]!r} -> {answer[:60]!r}")
    return 0


def add_commands(sub: Any, add_client_flags: Callable[[argparse.ArgumentParser], None]
                 ) -> dict[str, Callable[[argparse.Namespace], int]]:
    ask = sub.add_parser("ask", help="ask the mesh a question")
    ask.add_argument("question")
    ask.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    ask.add_argument("--trace", action="store_true", help="print the execution trace to stderr")
    ask.add_argument("--model", help="model name (default: the mesh's first model)")
    ask.add_argument("--max-tokens", type=int)
    ask.add_argument("--temperature", type=float)
    ask.add_argument("--top-p", type=float)
    ask.add_argument("--seed", type=int)
    ask.add_argument("--system", help="system prompt")
    ask.add_argument("--stop", action="append", help="stop string; repeatable")
    ask.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    ask.add_argument("--no-store", action="store_true", help="read the cache but do not store the answer")
    ask.add_argument("--cache-random", action="store_true",
                     help="allow caching a random (temperature > 0, no seed) generation")
    ask.add_argument("--no-tools", action="store_true", help="always generate; never route to a tool")
    ask.add_argument("--namespace", help="cache namespace (part of the key; default: the default namespace)")
    ask.add_argument("--ttl", type=float, help="time to live of the stored answer, seconds")
    ask.add_argument("--max-age", type=float, help="accept only a cached answer at most this many seconds old")
    ask.add_argument("--semantic", action=argparse.BooleanOptionalAction, default=None,
                     help="semantic cache lookup and store (default: the namespace's or node's setting)")
    ask.add_argument("--min-similarity", type=float, help="similarity threshold of a semantic hit")
    add_client_flags(ask)
    tasks = sub.add_parser("tasks", help="recent tasks of a planner, newest first")
    tasks.add_argument("--limit", type=int, default=20, help="how many tasks (fetched in pages; default 20)")
    add_client_flags(tasks)
    return {"ask": cmd_ask, "tasks": cmd_tasks}
