"""The OpenAI-compatible HTTP API against the planner's own gRPC stream, on one node.

One ``llmlab node --roles planner,tools,llm,cache,bridge`` child process (embedded
SmolLM2 on Ray). Legs, measured in the same run, interleaved prompt by prompt:

- ``grpc`` (the baseline): ``Planner.AskStream`` over gRPC, the cache bypassed;
- ``http``: ``POST /v1/chat/completions`` with ``stream: true`` through the official
  ``openai`` client, ``Cache-Control: no-cache``, same prompt and parameters (greedy,
  fixed seed, so both legs generate the same tokens).

Per leg: time to first token (TTFT) and tokens/s (completion tokens over the whole
call), median and p99, and the ratio to the baseline. Then cache-hit latency: the
same question answered from the cache ``--hits`` times through the HTTP API
(non-streamed, openai client) and through ``Planner.Ask`` over gRPC, p50 and p99.

Bounded: ``--prompts`` x ``--repeats`` generations per leg, ``--hits`` hits per leg,
``--budget-s`` overall.
Run: .venv/bin/python scripts/bench/openai_api.py [--repeats 2] [--max-tokens 48] [--hits 200]
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.procs import NodeProcess, spawn_node
from llmlab_grpc.proto.llmlab.v1 import node_pb2, node_pb2_grpc, planner_pb2, planner_pb2_grpc
from scripts.bench.generation import MODEL, PROMPTS, Sample
from scripts.bench.stats import generation_table, report

HIT_PROMPT = "Name a famous painter."


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
                                  params={"max_tokens": max_tokens, "temperature": 0.0, "seed": 1})  # type: ignore[arg-type]
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


def measure_hits(node: NodeProcess, client: openai.OpenAI, count: int, deadline: float) -> None:
    stub = planner_pb2_grpc.PlannerStub(grpc.insecure_channel(node.address))
    query = planner_pb2.Query(text=HIT_PROMPT, model=MODEL, no_tools=True, params={"max_tokens": 24})  # type: ignore[arg-type]
    messages = [{"role": "user", "content": HIT_PROMPT}]

    def via_http() -> str:
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, max_tokens=24,
                                                               extra_body={"llmlab": {"tools": False}})
        raw.parse()
        return raw.headers["x-llmlab-cache"]

    def via_grpc() -> str:
        task = stub.Ask(planner_pb2.AskRequest(query=query), metadata=bearer(node.secret), timeout=60).task
        return planner_pb2.CacheOutcome.Name(task.steps[-1].cache).removeprefix("CACHE_OUTCOME_").lower()

    via_http()  # the miss that fills the cache
    times: dict[str, list[float]] = {"grpc": [], "http": []}
    outcomes: set[str] = set()
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        for name, call in (("grpc", via_grpc), ("http", via_http)):
            start = time.perf_counter()
            outcomes.add(call())
            times[name].append(time.perf_counter() - start)
    if outcomes != {"hit"}:
        print(f"warning: cache outcomes seen {sorted(outcomes)} (expected only hit)")
    print(f"\ncache hit, {len(times['http'])} calls per leg ({HIT_PROMPT!r}, non-streamed)")
    base = report("grpc", times["grpc"], width=6)
    report("http", times["http"], base, base_name="grpc", width=6)
    print("baseline: grpc (Planner.Ask)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help=f"1..{len(PROMPTS)}")
    parser.add_argument("--repeats", type=int, default=2, help="passes over the prompts (1..20)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--hits", type=int, default=200, help="cache hits per leg (1..5000)")
    parser.add_argument("--budget-s", type=float, default=300.0, help="stop measuring after this long")
    args = parser.parse_args()
    prompts = PROMPTS[: max(1, min(args.prompts, len(PROMPTS)))]
    repeats = max(1, min(args.repeats, 20))
    hits = max(1, min(args.hits, 5000))
    secret = secrets.token_urlsafe(24)
    log_dir = Path(tempfile.mkdtemp(prefix="llmlab-bench-"))
    print(f"node log: {log_dir / 'bench-openai.log'}")
    node = spawn_node("bench-openai", secret, "--roles", "planner,tools,llm,cache,bridge", "--no-mdns",
                      "--http-port", "0", env={"LLMLAB_CACHE_STORE": "memory"}, start_timeout=180, log_dir=log_dir)
    try:
        info = node.call(node_pb2_grpc.NodeStub, "GetInfo", node_pb2.GetInfoRequest()).info
        client = openai.OpenAI(base_url=f"{info.http_url}/v1", api_key=secret, max_retries=0, timeout=300)
        legs = [Leg("grpc", grpc_leg(node, args.max_tokens)), Leg("http", http_leg(client, args.max_tokens))]
        for leg in legs:  # warm-up: first calls pay for connections and the model's first run
            leg.run(prompts[0])
        deadline = time.monotonic() + args.budget_s
        mismatched = 0
        for _ in range(repeats):
            for prompt in prompts:
                if time.monotonic() > deadline:
                    break
                samples = [leg.run(prompt) for leg in legs]
                for leg, sample in zip(legs, samples, strict=True):
                    leg.samples.append(sample)
                mismatched += len({s.text for s in samples}) > 1
        print(f"model {MODEL}, max_tokens {args.max_tokens}, greedy, {len(prompts)} prompts x {repeats} passes; "
              f"legs produced different text for {mismatched} prompt(s)")
        report_generation(legs)
        measure_hits(node, client, hits, deadline + 60)
    finally:
        node.stop(signal.SIGTERM, timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
