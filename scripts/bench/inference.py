"""Generation speed of the embedded model: the runtime called directly vs through the mesh.

Legs, measured in the same run on the same prompts (greedy, fixed seed, so every leg
generates the same tokens), interleaved prompt by prompt so that the load of the
machine falls on every leg alike:

- ``direct`` (the baseline): ``LlamaCppBackend`` in this process, the very class the
  Ray actor runs, with the same settings;
- ``grpc``: ``Inference.Generate`` on an ``llmlab node --roles llm`` child process
  (its own local Ray, the model on a Ray actor, tokens over a Ray streaming generator
  and a gRPC server stream);
- ``planner``: ``Planner.AskStream`` on the same node (planning, routing, trace).

Per leg: time to first token (TTFT) and tokens/s (completion tokens over the whole
call), median and p99, and the ratio to the baseline as "overhead" (>1 = slower than
direct; the issue's goal for the mesh is under 1.05).

To add a leg: write ``async def my_leg(prompt) -> Sample`` and
append ``Leg("name", my_leg)`` to the list built in ``main``; setup and teardown go
in ``legs()``'s ``AsyncExitStack``.

Bounded: ``--prompts`` x ``--repeats`` calls per leg, ``--budget-s`` overall.
Run: .venv/bin/python scripts/bench/inference.py [--repeats 3] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llmlab_grpc.inference.backends import BackendOptions, backend_class
from llmlab_grpc.inference.client import generate_stream
from llmlab_grpc.inference.types import Params, Usage
from llmlab_grpc.mesh.channels import open_channel
from llmlab_grpc.procs import spawn_node
from scripts.bench.generation import MODEL, PROMPTS, Sample
from scripts.bench.stats import generation_table


@dataclass
class Leg:
    name: str
    run: Callable[[str], Awaitable[Sample]]
    samples: list[Sample] = field(default_factory=list)


def direct_leg(max_tokens: int) -> Callable[[str], Awaitable[Sample]]:
    backend = backend_class("llama_cpp")(MODEL, BackendOptions())
    backend.load()
    params = Params(max_tokens=max_tokens, temperature=0.0, seed=1)

    async def run(prompt: str) -> Sample:
        start = time.perf_counter()
        first = 0.0
        pieces: list[str] = []
        tokens = 0
        for event in backend.generate([{"role": "user", "content": prompt}], params):
            if isinstance(event, str):
                first = first or time.perf_counter() - start
                pieces.append(event)
            elif isinstance(event, Usage):
                tokens = event.completion_tokens
            else:
                raise RuntimeError(event)
        return Sample(first, tokens, time.perf_counter() - start, "".join(pieces))

    return run


def grpc_leg(address: str, secret: str, max_tokens: int) -> Callable[[str], Awaitable[Sample]]:
    channel = open_channel(address, secret)
    params = {"max_tokens": max_tokens, "temperature": 0.0, "seed": 1}

    async def run(prompt: str) -> Sample:
        start = time.perf_counter()
        first = 0.0
        pieces: list[str] = []
        tokens = 0
        async for response in generate_stream(channel, MODEL, [{"role": "user", "content": prompt}], params,
                                              timeout=120):
            if response.HasField("usage"):
                tokens = response.usage.completion_tokens
            else:
                first = first or time.perf_counter() - start
                pieces.append(response.text)
        return Sample(first, tokens, time.perf_counter() - start, "".join(pieces))

    return run


def planner_leg(address: str, secret: str, max_tokens: int) -> Callable[[str], Awaitable[Sample]]:
    """``Planner.AskStream``: planning, routing and the trace on top of the grpc leg.

    Tokens are the completion tokens the llm node reported (the final task's step usage);
    the cache and tools are off so every sample is a real generation.
    """
    from llmlab_grpc.proto.llmlab.v1 import planner_pb2, planner_pb2_grpc

    stub = planner_pb2_grpc.PlannerStub(open_channel(address, secret))

    async def run(prompt: str) -> Sample:
        query = planner_pb2.Query(text=prompt, no_cache=True, no_tools=True)
        query.params.max_tokens, query.params.temperature, query.params.seed = max_tokens, 0.0, 1
        start = time.perf_counter()
        first = 0.0
        pieces: list[str] = []
        tokens = 0
        async for event in stub.AskStream(planner_pb2.AskStreamRequest(query=query), timeout=120):
            if event.WhichOneof("event") == "token":
                first = first or time.perf_counter() - start
                pieces.append(event.token.text)
            elif event.WhichOneof("event") == "final":
                tokens = sum(step.usage.completion_tokens for step in event.final.steps)
        return Sample(first, tokens, time.perf_counter() - start, "".join(pieces))

    return run


@contextlib.asynccontextmanager
async def legs(max_tokens: int) -> AsyncIterator[list[Leg]]:
    secret = secrets.token_urlsafe(24)
    node = spawn_node("bench-llm", secret, "--roles", "planner,llm", "--no-mdns", start_timeout=120)
    try:
        yield [Leg("direct", direct_leg(max_tokens)), Leg("grpc", grpc_leg(node.address, secret, max_tokens)),
               Leg("planner", planner_leg(node.address, secret, max_tokens))]
    finally:
        node.stop(signal.SIGTERM, timeout=20)


def report(all_legs: list[Leg]) -> None:
    """The TTFT and tokens/s table, ``direct`` (the first leg) as the baseline."""
    generation_table([(leg.name, [s.ttft_s for s in leg.samples], [s.tokens_per_s for s in leg.samples])
                      for leg in all_legs])


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help=f"1..{len(PROMPTS)}")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the prompts (1..20)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--budget-s", type=float, default=300.0, help="stop measuring after this long")
    args = parser.parse_args()
    prompts = PROMPTS[: max(1, min(args.prompts, len(PROMPTS)))]
    repeats = max(1, min(args.repeats, 20))
    async with legs(args.max_tokens) as all_legs:
        for leg in all_legs:  # warm-up: first calls pay for connections and caches
            await leg.run(prompts[0])
        deadline = time.monotonic() + args.budget_s
        mismatched = 0
        for _ in range(repeats):
            for prompt in prompts:
                if time.monotonic() > deadline:
                    break
                samples = [await leg.run(prompt) for leg in all_legs]
                for leg, sample in zip(all_legs, samples, strict=True):
                    leg.samples.append(sample)
                mismatched += len({s.text for s in samples}) > 1
    print(f"model {MODEL}, max_tokens {args.max_tokens}, greedy, {len(prompts)} prompts x {repeats} passes; "
          f"legs produced different text for {mismatched} prompt(s)")
    report(all_legs)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
