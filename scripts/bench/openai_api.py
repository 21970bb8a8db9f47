"""The OpenAI-compatible HTTP API against the planner's own gRPC stream, on one node.

One ``llmlab node --roles planner,tools,llm,cache,bridge`` child process (embedded
SmolLM2 on Ray). Legs, measured in the same run, interleaved prompt by prompt (the cache-hit
legs call by call, in a new shuffled order each round):

- ``grpc`` (the baseline): ``Planner.AskStream`` over gRPC, the cache bypassed;
- ``http``: ``POST /v1/chat/completions`` with ``stream: true`` through the official
  ``openai`` client, ``Cache-Control: no-cache``, same prompt and parameters (greedy,
  fixed seed, so both legs generate the same tokens).

Per leg: time to first token (TTFT) and tokens/s (completion tokens over the whole
call), median and p99, and the ratio to the baseline. Then cache-hit latency: the
same question answered from the cache ``--hits`` times through the HTTP API
(non-streamed, openai client) and through ``Planner.Ask`` over gRPC, p50 and p99,
each beside its floor measured in the same node process, on the same event loop:

- ``v1`` (a plain httpx POST of the same request) against ``floor``: a bare Starlette
  route on the node's own HTTP server that reads the request and answers the very JSON
  body the hit answered (goal: v1 within 1.3x of the floor);
- ``Planner.Ask`` against ``echo``: a bare grpc.aio server (no interceptors) in the node
  process, on its event loop, answering the very bytes of the hit's ``AskResponse``, called
  exactly as the generated stub calls ``Ask`` (the same ``AskRequest`` serialized, the
  metadata, the deadline, the reply parsed as an ``AskResponse``), so the ratio compares the
  two servers (goal: 1.3x); against ``echo-raw``, the same echo called with empty bytes, no
  metadata and no deadline, its reply not parsed (the floor of runs before 2026-12-02: it
  leaves out the client's share of a call, so a ratio against it is the larger); and against
  floor 2, the same echo behind the node's own method table (secret checked, call counted),
  called as the stub calls ``Ask``. Every leg's cache outcome is read after its call is timed.
  ``scripts/bench/cache.py --only-ask`` measures the hit against the same two echoes, but its
  echo is a separate small process rather than the node's own.

The node runs in this script's child mode (``--serve``), which is ``llmlab node`` plus
those two floors; nothing of them exists in a normal node.

Bounded: ``--prompts`` x ``--repeats`` generations per leg, ``--hits`` hits per leg,
``--budget-s`` overall.
Run: .venv/bin/python scripts/bench/openai_api.py [--repeats 2] [--max-tokens 48] [--hits 200]
"""

from __future__ import annotations

import argparse
import random
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.procs import NodeProcess, launch
from llmlab_grpc.proto.llmlab.v1 import node_pb2, node_pb2_grpc, planner_pb2, planner_pb2_grpc
from scripts.bench.echo_floors import ECHO_METHOD, GUARDED_METHOD, SET_ECHO_METHOD, serve_node_with_floors
from scripts.bench.generation import MODEL, PROMPTS, Sample
from scripts.bench.stats import generation_table, load_average, report

HIT_PROMPT = "Name a famous painter."
FLOOR_PATH = "/bench/floor"
ECHO_RE = "bench echo on "


# -- child mode: the node plus its floors ---------------------------------------------------------

def serve(argv: list[str]) -> int:
    """``llmlab node ARGV`` in this process, plus the HTTP floor route and a bare gRPC echo server."""
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    state = {"body": b"{}"}

    async def floor(request: Request) -> Response:
        body = await request.body()
        if request.method == "PUT":  # the bench sets the body to answer: a /v1 hit's own answer
            state["body"] = body
            return Response(status_code=204)
        return Response(state["body"], media_type="application/json")

    def add_floor(node: Any) -> None:
        node.components["bridge"].http.add_routes([Route(FLOOR_PATH, floor, methods=["POST", "PUT"])])

    def announce(settings: Any, address: str, port: int) -> None:
        print(f"{ECHO_RE}127.0.0.1:{port}", flush=True)  # the bare echo and floor 2
        print(f"llmlab node {settings.name} listening on {address}", flush=True)

    return serve_node_with_floors(argv, announce, add_floor)


def spawn_bench_node(secret: str, args: list[str], log_dir: Path, timeout_s: float = 180.0,
                     wrapper: list[str] | None = None) -> tuple[NodeProcess, str]:
    """The child node (stopped by PID by the caller) and its echo server's address.

    ``wrapper`` runs it behind a command that execs it (``valgrind ...``: same PID).
    """
    cmd = [*(wrapper or []), sys.executable, __file__, "--serve", "--name", "bench-openai", "--host", "127.0.0.1",
           "--port", "0", *args]
    node = launch(cmd, "bench-openai", secret, env={"LLMLAB_CACHE_STORE": "memory"},
                  log_path=log_dir / "bench-openai.log")
    listening = node.listening.wait(timeout_s)
    echo = [line.split()[-1] for line in node.output if line.startswith(ECHO_RE)]  # printed before "listening"
    if not listening or not node.address or not echo:
        node.stop(signal.SIGKILL)
        raise RuntimeError(f"the bench node did not start: {''.join(node.output)}")
    return node, echo[0]


@dataclass
class Leg:
    name: str
    run: Callable[[str], Sample]
    samples: list[Sample] = field(default_factory=list)


def grpc_leg(node: NodeProcess, max_tokens: int) -> Callable[[str], Sample]:
    channel = grpc.insecure_channel(node.address)
    stub = planner_pb2_grpc.PlannerStub(channel)

    def run(prompt: str) -> Sample:
        query = planner_pb2.Query(text=prompt, model=MODEL, no_cache=True, no_tools=True,
                                  params={"max_tokens": max_tokens, "temperature": 0.0, "seed": 1})
        start = time.perf_counter()
        first = 0.0
        pieces: list[str] = []
        tokens = 0
        for event in stub.AskStream(planner_pb2.AskStreamRequest(query=query), metadata=bearer(node.secret),
                                    timeout=300):
            kind = event.WhichOneof("event")
            if kind == "token":
                first = first or time.perf_counter() - start
                pieces.append(event.token.text)
            elif kind == "final":
                tokens = sum(s.usage.completion_tokens for s in event.final.steps)
        return Sample(first, tokens, time.perf_counter() - start, "".join(pieces))

    return run


def http_leg(client: openai.OpenAI, max_tokens: int) -> Callable[[str], Sample]:
    def run(prompt: str) -> Sample:
        start = time.perf_counter()
        first = 0.0
        pieces: list[str] = []
        tokens = 0
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0,
            seed=1, stream=True, stream_options={"include_usage": True}, extra_headers={"Cache-Control": "no-cache"},
            extra_body={"llmlab": {"tools": False}})
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter() - start
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return Sample(first, tokens, time.perf_counter() - start, "".join(pieces))

    return run


def report_generation(legs: list[Leg]) -> None:
    """The TTFT and tokens/s table, ``grpc`` (the first leg) as the baseline."""
    generation_table([(leg.name, [s.ttft_s for s in leg.samples], [s.tokens_per_s for s in leg.samples])
                      for leg in legs])


def measure_hits(node: NodeProcess, client: openai.OpenAI, base_url: str, echo_address: str, count: int,
                 deadline: float) -> None:
    stub = planner_pb2_grpc.PlannerStub(grpc.insecure_channel(node.address))
    query = planner_pb2.Query(text=HIT_PROMPT, model=MODEL, no_tools=True, params={"max_tokens": 24})
    request = planner_pb2.AskRequest(query=query)
    metadata = bearer(node.secret)
    messages = [{"role": "user", "content": HIT_PROMPT}]
    body = {"model": MODEL, "messages": messages, "max_tokens": 24, "llmlab": {"tools": False}}
    http = httpx.Client(headers={"authorization": f"Bearer {node.secret}"}, timeout=60)
    echo_channel = grpc.insecure_channel(echo_address)
    # Every gRPC leg is called the way the generated stub calls Planner.Ask: the same AskRequest
    # serialized, the same metadata and deadline, the reply parsed as an AskResponse. Only
    # echo-raw (the floor of runs before 2026-12-02) sends no bytes, no metadata and no deadline
    # and leaves its reply unparsed: it prices the server alone less the client's share of a call.
    echo = echo_channel.unary_unary(ECHO_METHOD, request_serializer=planner_pb2.AskRequest.SerializeToString,
                                    response_deserializer=planner_pb2.AskResponse.FromString, _registered_method=True)
    echo_raw = echo_channel.unary_unary(ECHO_METHOD)
    guarded = echo_channel.unary_unary(GUARDED_METHOD, request_serializer=planner_pb2.AskRequest.SerializeToString,
                                       response_deserializer=planner_pb2.AskResponse.FromString,
                                       _registered_method=True)

    def via_http() -> Any:
        return client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, max_tokens=24,
                                                                extra_body={"llmlab": {"tools": False}}).parse()

    def via_v1() -> Any:
        reply = http.post(f"{base_url}/v1/chat/completions", json=body)
        reply.raise_for_status()
        return reply

    def via_floor() -> Any:
        return http.post(f"{base_url}{FLOOR_PATH}", json=body).raise_for_status()

    legs: dict[str, Callable[[], Any]] = {
        "grpc": lambda: stub.Ask(request, metadata=metadata, timeout=60),
        "echo": lambda: echo(request, metadata=metadata, timeout=60),
        "echo-raw": lambda: echo_raw(b""),
        "guarded": lambda: guarded(request, metadata=metadata, timeout=60),
        "http": via_http, "v1": via_v1, "floor": via_floor}
    # How each leg's answer says it was a hit (read after its call is timed).
    outcomes_of: dict[str, Callable[[Any], str]] = {
        "grpc": lambda reply: planner_pb2.CacheOutcome.Name(reply.task.steps[-1].cache).removeprefix(
            "CACHE_OUTCOME_").lower(),
        "http": lambda completion: completion.llmlab["cache"],
        "v1": lambda reply: reply.headers["x-llmlab-cache"]}

    via_http()  # the miss that fills the cache
    hit = http.post(f"{base_url}/v1/chat/completions", json=body)
    assert hit.headers["x-llmlab-cache"] == "hit", hit.headers
    http.put(f"{base_url}{FLOOR_PATH}", content=hit.content).raise_for_status()
    asked = stub.Ask(request, metadata=metadata, timeout=60)
    echo_channel.unary_unary(SET_ECHO_METHOD)(asked.SerializeToString())
    assert echo(request, metadata=metadata, timeout=60).task.answer == asked.task.answer
    times: dict[str, list[float]] = {name: [] for name in legs}
    outcomes: set[str] = set()
    load_before = load_average()
    order = list(legs.items())
    shuffler = random.Random(15)
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        shuffler.shuffle(order)  # each round in a new order: no leg always follows the same one
        for name, call in order:
            start = time.perf_counter()
            result = call()
            times[name].append(time.perf_counter() - start)
            if name in outcomes_of:
                outcomes.add(outcomes_of[name](result))
    if outcomes != {"hit"}:
        print(f"warning: cache outcomes seen {sorted(outcomes)} (expected only hit)")
    print(f"\ncache hit, {len(times['http'])} calls per leg ({HIT_PROMPT!r}, non-streamed; "
          f"{len(hit.content)} B JSON, {asked.ByteSize()} B AskResponse)")
    echo_median = report("echo (bare gRPC, called as the stub calls Ask)", times["echo"], width=48)
    raw_median = report("echo-raw (no request, metadata or parse)", times["echo-raw"], echo_median,
                        base_name="echo", width=48)
    guarded_median = report("echo behind the node's method table (floor 2)", times["guarded"], echo_median,
                            base_name="echo", width=48)
    grpc_median = report("grpc (Planner.Ask)", times["grpc"], echo_median, base_name="echo", width=48)
    report("http (openai client)", times["http"], grpc_median, base_name="grpc", width=48)
    floor_median = report("floor (bare Starlette route, same JSON)", times["floor"], width=48)
    v1_median = report("v1 (httpx POST /v1/chat/completions)", times["v1"], floor_median, base_name="floor", width=48)
    print(f"goal: /v1 hit p50 / floor p50 = {v1_median / floor_median:.2f} (<= 1.3); "
          f"Planner.Ask hit p50 / echo p50 = {grpc_median / echo_median:.2f} (<= 1.3; "
          f"{grpc_median / raw_median:.2f} against echo-raw, {grpc_median / guarded_median:.2f} against floor 2; "
          f"load average {load_before} -> {load_average()})", flush=True)
    http.close()
    echo_channel.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help=f"1..{len(PROMPTS)}")
    parser.add_argument("--repeats", type=int, default=2, help="passes over the prompts (1..20)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--hits", type=int, default=200, help="cache hits per leg (1..5000)")
    parser.add_argument("--budget-s", type=float, default=300.0, help="stop measuring after this long")
    parser.add_argument("--only-hits", action="store_true", help="skip the generation legs")
    if sys.argv[1:2] == ["--serve"]:
        return serve(sys.argv[2:])
    args = parser.parse_args()
    prompts = PROMPTS[: max(1, min(args.prompts, len(PROMPTS)))]
    repeats = max(1, min(args.repeats, 20))
    hits = max(1, min(args.hits, 5000))
    secret = secrets.token_urlsafe(24)
    log_dir = Path(tempfile.mkdtemp(prefix="llmlab-bench-"))
    print(f"node log: {log_dir / 'bench-openai.log'}")
    node, echo_address = spawn_bench_node(secret, ["--roles", "planner,tools,llm,cache,bridge", "--no-mdns",
                                                   "--http-port", "0"], log_dir)
    try:
        info = node.call(node_pb2_grpc.NodeStub, "GetInfo", node_pb2.GetInfoRequest()).info
        client = openai.OpenAI(base_url=f"{info.http_url}/v1", api_key=secret, max_retries=0, timeout=300)
        legs = [Leg("grpc", grpc_leg(node, args.max_tokens)), Leg("http", http_leg(client, args.max_tokens))]
        for leg in legs:  # warm-up: first calls pay for connections and the model's first run
            leg.run(prompts[0])
        deadline = time.monotonic() + args.budget_s
        mismatched = 0
        for _ in range(0 if args.only_hits else repeats):
            for prompt in prompts:
                if time.monotonic() > deadline:
                    break
                samples = [leg.run(prompt) for leg in legs]
                for leg, sample in zip(legs, samples, strict=True):
                    leg.samples.append(sample)
                mismatched += len({s.text for s in samples}) > 1
        if not args.only_hits:
            print(f"model {MODEL}, max_tokens {args.max_tokens}, greedy, {len(prompts)} prompts x {repeats} passes; "
                  f"legs produced different text for {mismatched} prompt(s)")
            report_generation(legs)
        measure_hits(node, client, info.http_url, echo_address, hits, deadline + 60)
    finally:
        node.stop(signal.SIGTERM, timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
