"""Cache 2.0 on real node processes: namespaces, ttl, max age and Cache-Control through the ``openai``
client, pinned API keys, streamed replay of hits, the semantic cache and its guard, what a paired
phone is synced, and a semantic entry served after its primary is SIGKILLed.

One module mesh joined to the session's Ray head: ``c2-api`` (planner, cache, replica, bridge,
llm with the ``openai`` backend in front of a local server speaking the OpenAI API, whose model
answers ``echo: <question>``) and ``c2-store`` (cache, replica). The echo tells a hit from a
generation: a semantic hit answers with the *cached* question's echo.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import grpc
import openai
import pytest

from llmlab_grpc.bridge.client import MobileClient
from llmlab_grpc.inference.ray_head import RayHead
from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.openai_api.auth import add_key
from llmlab_grpc.proto.llmlab.v1 import (
    cache_pb2,
    cache_pb2_grpc,
    common_pb2,
    node_pb2,
    node_pb2_grpc,
    planner_pb2,
    planner_pb2_grpc,
    replica_pb2,
    replica_pb2_grpc,
)
from tests.bridge_support import eventually, http_url, pairing_token
from tests.conftest import ARTIFACTS, ray_env
from tests.helpers import NodeProcess, spawn_node, wait_until
from tests.inference_fakes import FakeOpenAI
from tests.test_metrics import value

FAKE = "echo-model"
FLAGS = ("--no-mdns", "--heartbeat-interval", "0.3", "--peer-timeout", "1.5", "--replication-retry", "0.5")


@dataclass
class Mesh:
    api: NodeProcess
    store: NodeProcess
    fake: FakeOpenAI
    keys_file: Path
    base: str
    env: dict[str, str]

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=key or self.api.secret, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, ray_head: RayHead) -> Iterator[Mesh]:
    home = tmp_path_factory.mktemp("cache2-home")
    ARTIFACTS.mkdir(exist_ok=True)
    secret = secrets.token_urlsafe(24)
    keys_file = home / "api_keys.json"
    fake = FakeOpenAI([FAKE]).__enter__()
    env = {**ray_env(ray_head), "LLMLAB_CACHE_STORE": "memory", "LLMLAB_HOME": str(home),
           "LLMLAB_BRIDGE_HEARTBEAT_MS": "300"}
    started: list[NodeProcess] = []
    try:
        api = spawn_node("c2-api", secret, *FLAGS, "--roles", "planner,cache,replica,bridge,llm", "--http-port", "0",
                         "--llm-backend", "openai", "--openai-url", f"{fake.url}/v1", "--llm-models", FAKE,
                         "--api-keys-file", str(keys_file), env=env, log_dir=ARTIFACTS, start_timeout=120)
        started.append(api)
        store = spawn_node("c2-store", secret, *FLAGS, "--roles", "cache,replica", "--peer", api.address,
                           env=env, log_dir=ARTIFACTS)
        started.append(store)
        wait_until(lambda: api.peer_names() == {"c2-store"} and store.peer_names() == {"c2-api"}, 30,
                   what="the mesh")
        yield Mesh(api=api, store=store, fake=fake, keys_file=keys_file, base=http_url(api), env=env)
    finally:
        for node in reversed(started):
            node.stop(timeout=20)
        fake.__exit__(None, None, None)


def chat(client: openai.OpenAI, text: str, **kwargs: object) -> openai.APIResponse:  # type: ignore[type-arg]
    kwargs.setdefault("temperature", 0)
    return client.chat.completions.with_raw_response.create(  # type: ignore[call-overload,no-any-return]
        model=FAKE, messages=[{"role": "user", "content": text}], **kwargs)


def cached(node: NodeProcess, text: str, namespace: str = "") -> cache_pb2.GetResponse:
    lookup = cache_pb2.CacheLookup(prompt=text, model=FAKE, params=common_pb2.GenerationParams(temperature=0),
                                   namespace=namespace)
    return node.call(cache_pb2_grpc.CacheStub, "Get", cache_pb2.GetRequest(lookup=lookup))


def test_openai_client_cache_body_namespaces_and_ttl(mesh: Mesh) -> None:
    client = mesh.client()
    body = {"cache": {"namespace": "a", "ttl": 60}}
    first = chat(client, "Name a red fruit.", extra_body=body)
    assert first.headers["x-llmlab-cache"] == "miss"
    second = chat(client, "Name a red fruit.", extra_body=body)
    assert second.headers["x-llmlab-cache"] == "hit"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    other = chat(client, "Name a red fruit.", extra_body={"cache": {"namespace": "b"}})
    assert other.headers["x-llmlab-cache"] == "miss"
    in_a, in_b = cached(mesh.api, "Name a red fruit.", "a"), cached(mesh.api, "Name a red fruit.", "b")
    assert in_a.found and in_b.found and in_a.entry.key != in_b.entry.key  # one prompt, two namespaces, 2 entries
    assert in_a.entry.expires_unix_ms - in_a.entry.created_unix_ms == 60_000  # the request's ttl
    assert not cached(mesh.api, "Name a red fruit.").found  # nothing in the default namespace
    trace = second.parse().model_extra["llmlab"]
    assert trace["steps"][-1]["cache_match"]["namespace"] == "a"


def test_cache_control_request_headers(mesh: Mesh) -> None:
    client = mesh.client()
    text = "Name a green vegetable."
    assert chat(client, text, extra_headers={"Cache-Control": "no-store"}).headers["x-llmlab-cache"] == "miss"
    assert chat(client, text, extra_headers={"Cache-Control": "no-store"}).headers["x-llmlab-cache"] == "miss"
    assert chat(client, text).headers["x-llmlab-cache"] == "miss"  # stored now
    assert chat(client, text).headers["x-llmlab-cache"] == "hit"
    assert chat(client, text, extra_headers={"Cache-Control": "max-age=0"}).headers["x-llmlab-cache"] == "miss"
    assert chat(client, text, extra_headers={"Cache-Control": "max-age=3600"}).headers["x-llmlab-cache"] == "hit"
    assert chat(client, text, extra_headers={"Cache-Control": "no-cache"}).headers["x-llmlab-cache"] == "bypass"
    with pytest.raises(openai.BadRequestError, match="Cache-Control"):
        chat(client, text, extra_headers={"Cache-Control": "max-age=soon"})


def test_a_pinned_key_cannot_cross_namespaces(mesh: Mesh) -> None:
    alice = add_key(mesh.keys_file, "alice", namespace="team-a")
    bob = add_key(mesh.keys_file, "bob")
    pinned = mesh.client(alice)
    assert chat(pinned, "Name a blue bird.").headers["x-llmlab-cache"] == "miss"
    assert cached(mesh.api, "Name a blue bird.", "team-a").found  # written into its namespace
    assert cached(mesh.api, "Name a blue bird.", "team-a").entry.writer == "alice"
    with pytest.raises(openai.PermissionDeniedError, match="pinned"):
        chat(pinned, "Name a blue bird.", extra_body={"cache": {"namespace": "team-b"}})
    with pytest.raises(openai.PermissionDeniedError, match="team-a"):
        chat(mesh.client(bob), "Name a blue bird.", extra_body={"cache": {"namespace": "team-a"}})
    assert chat(mesh.client(bob), "Name a blue bird.").headers["x-llmlab-cache"] == "miss"  # not alice's entry


def test_a_streamed_hit_arrives_in_pieces_with_finish_reason_and_usage(mesh: Mesh) -> None:
    client = mesh.client()
    text = "Describe the colour of the sea on a calm summer morning."
    chat(client, text)
    stream = client.chat.completions.with_raw_response.create(
        model=FAKE, messages=[{"role": "user", "content": text}], temperature=0, stream=True,
        stream_options={"include_usage": True})
    assert stream.headers["x-llmlab-cache"] == "hit"
    pieces, finish, usage = [], None, None
    for chunk in stream.parse():
        if chunk.choices:
            if chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert len(pieces) > 5 and "".join(pieces).startswith("echo: Describe")
    assert finish == "stop" and usage is not None and usage.completion_tokens > 0
    request = planner_pb2.AskStreamRequest(
        query=planner_pb2.Query(text=text, model=FAKE, params=common_pb2.GenerationParams(temperature=0)))
    with grpc.insecure_channel(mesh.api.address) as channel:
        events = list(planner_pb2_grpc.PlannerStub(channel).AskStream(request, metadata=bearer(mesh.api.secret),
                                                                      timeout=60))
    tokens = [e.token.text for e in events if e.WhichOneof("event") == "token"]
    final = events[-1].final
    assert len(tokens) > 5 and "".join(tokens).strip() == final.answer
    assert final.steps[-1].cache == planner_pb2.CACHE_OUTCOME_HIT and final.steps[-1].usage.finish_reason == "stop"


def test_semantic_hits_paraphrases_and_the_guard_refuses_near_misses(mesh: Mesh) -> None:
    client = mesh.client()
    semantic = {"cache": {"semantic": True}}
    assert chat(client, "What is the capital of France?", extra_body=semantic).headers["x-llmlab-cache"] == "miss"
    hit = chat(client, "Which city is the capital of France?", extra_body=semantic)
    assert hit.headers["x-llmlab-cache"] == "semantic-hit"
    assert float(hit.headers["x-llmlab-cache-similarity"]) >= 0.9
    assert unquote(hit.headers["x-llmlab-cache-matched-prompt"]) == "What is the capital of France?"
    assert hit.parse().choices[0].message.content == "echo: What is the capital of France?"
    row = hit.parse().model_extra["llmlab"]["steps"][-1]
    assert row["cache"] == "semantic-hit" and row["cache_match"]["matched_prompt"] == "What is the capital of France?"
    for near in ("What is the capital of Germany?", "What is not the capital of France?"):
        assert chat(client, near, extra_body=semantic).headers["x-llmlab-cache"] == "miss", near
    assert chat(client, "Which city is the capital of France?").headers["x-llmlab-cache"] == "miss"  # opt-in only
    # Multi-turn: the same last question after another earlier turn is a miss.
    def turns(topic: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"Let's talk about {topic}."}, {"role": "assistant", "content": "Sure."},
                {"role": "user", "content": "What is its capital?"}]
    first = client.chat.completions.with_raw_response.create(model=FAKE, messages=turns("Italy"), temperature=0,
                                                             extra_body=semantic)
    assert first.headers["x-llmlab-cache"] == "miss"
    other = client.chat.completions.with_raw_response.create(model=FAKE, messages=turns("Spain"), temperature=0,
                                                             extra_body=semantic)
    assert other.headers["x-llmlab-cache"] == "miss"
    again = client.chat.completions.with_raw_response.create(model=FAKE, messages=turns("Italy"), temperature=0,
                                                             extra_body=semantic)
    assert again.headers["x-llmlab-cache"] == "hit"


def test_cache_get_semantic_lookup_mode_and_cli(mesh: Mesh) -> None:
    env = {**os.environ, "LLMLAB_MESH_SECRET": mesh.api.secret}
    put = subprocess.run([sys.executable, "-m", "llmlab_grpc", "cache", "put", "--target", mesh.api.address,
                          "--prompt", "How many legs does a spider have?", "--model", FAKE, "--param",
                          "temperature=0", "--response", "Eight.", "--semantic"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert put.returncode == 0, put.stderr
    got = subprocess.run([sys.executable, "-m", "llmlab_grpc", "cache", "get", "--target", mesh.api.address,
                          "--semantic", "--prompt", "How many legs do spiders have?", "--param",
                          "temperature=0", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert got.returncode == 0, got.stderr
    body = json.loads(got.stdout)
    assert body["match"] == "semantic" and body["entry"]["response"] == "Eight." and body["similarity"] >= 0.9
    assert body["candidates"][0]["accepted"] and body["candidates"][0]["semantic_text"] == (
        "How many legs does a spider have?")
    near = cache_pb2.GetRequest(lookup=cache_pb2.CacheLookup(
        prompt="How many legs does an ant have?", model=FAKE, params=common_pb2.GenerationParams(temperature=0)),
        semantic=True, candidates=3)
    reply = mesh.api.call(cache_pb2_grpc.CacheStub, "Get", near)
    assert not reply.found
    refused = [c for c in reply.candidates if c.semantic_text == "How many legs does a spider have?"]
    assert refused and not refused[0].accepted and refused[0].refused_because
    with pytest.raises(grpc.RpcError) as err:
        mesh.api.call(cache_pb2_grpc.CacheStub, "Get", cache_pb2.GetRequest(key="0" * 64, semantic=True))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_per_user_key_entry_is_not_synced_to_a_phone(mesh: Mesh) -> None:
    carol = add_key(mesh.keys_file, "carol")
    phone = MobileClient(mesh.base, pairing_token(mesh.base), name="c2-phone", cache_replica=True)
    await phone.connect()
    runner = asyncio.create_task(phone.run())
    try:
        await asyncio.to_thread(chat, mesh.client(carol), "Carol's private question about her salary.")
        await asyncio.to_thread(chat, mesh.client(), "A shared question about the weather.")
        await eventually(lambda: any(e.get("prompt") == "A shared question about the weather."
                                     for e in phone.replica.values()), 15, "the shared entry on the phone")
        await asyncio.sleep(0.5)  # one more sync batch
        prompts = {e.get("prompt") for e in phone.replica.values()}
        assert "Carol's private question about her salary." not in prompts
        assert all("embedding" not in e and "writer" not in e for e in phone.replica.values())
        late = MobileClient(mesh.base, pairing_token(mesh.base), name="c2-late-phone", cache_replica=True)
        await late.connect()  # a phone that pairs later starts from a snapshot: filtered the same way
        late_runner = asyncio.create_task(late.run())
        try:
            await eventually(lambda: any(e.get("prompt") == "A shared question about the weather."
                                         for e in late.replica.values()), 15, "the snapshot on the late phone")
            assert "Carol's private question about her salary." not in {e.get("prompt") for e in late.replica.values()}
        finally:
            await late.close()
            late_runner.cancel()
    finally:
        await phone.close()
        runner.cancel()


def test_a_semantic_lookup_asks_the_peers_when_this_node_holds_no_match(mesh: Mesh) -> None:
    """An entry held only on a third node (``--replicas 0``: its puts stay there) answers a
    paraphrase asked on c2-api: c2-api sends the question's vector (``Replica.Search``) to its
    peers and judges what comes back itself."""
    far = spawn_node("c2-far", mesh.api.secret, *FLAGS, "--roles", "cache,replica", "--replicas", "0",
                     "--peer", mesh.api.address, env=mesh.env, log_dir=ARTIFACTS)
    try:
        wait_until(lambda: "c2-far" in mesh.api.peer_names(), 30, what="c2-api to see c2-far")
        params = common_pb2.GenerationParams(temperature=0)
        lookup = cache_pb2.CacheLookup(prompt="Who painted the Mona Lisa?", model=FAKE, params=params)
        key = far.call(cache_pb2_grpc.CacheStub, "Put", cache_pb2.PutRequest(
            lookup=lookup, response="Leonardo da Vinci (cached on c2-far)", semantic=True)).key
        far_id = far.call(node_pb2_grpc.NodeStub, "GetInfo", node_pb2.GetInfoRequest()).info.node_id
        for node in (mesh.api, mesh.store):
            assert not node.call(replica_pb2_grpc.ReplicaStub, "Fetch", replica_pb2.FetchRequest(key=key)).found
        query = planner_pb2.Query(text="Who was the painter of the Mona Lisa?", model=FAKE, params=params,
                                  no_store=True, cache=planner_pb2.CacheControl(semantic=True))
        task = mesh.api.call(planner_pb2_grpc.PlannerStub, "Ask", planner_pb2.AskRequest(query=query),
                             timeout=60).task
        assert task.answer == "Leonardo da Vinci (cached on c2-far)"
        step = task.steps[-1]
        assert step.cache == planner_pb2.CACHE_OUTCOME_SEMANTIC_HIT and step.node_id == far_id
        assert step.cache_match.matched_prompt == "Who painted the Mona Lisa?" and step.cache_match.similarity >= 0.9
        text = mesh.api.call(node_pb2_grpc.NodeStub, "GetMetrics", node_pb2.GetMetricsRequest()).text
        assert value(text, "llmlab_semantic_hits_total", {"source": "peer"}) == 1
        assert value(text, "llmlab_semantic_peer_searches_total") >= 1
        # a near-miss is refused on both sides: generated, not served from c2-far
        near = planner_pb2.Query(text="Who painted The Starry Night?", model=FAKE, params=params,
                                 no_store=True, cache=planner_pb2.CacheControl(semantic=True))
        task = mesh.api.call(planner_pb2_grpc.PlannerStub, "Ask", planner_pb2.AskRequest(query=near),
                             timeout=60).task
        assert task.answer.startswith("echo: Who painted The Starry Night?")
        # what a node refuses to search with: a vector of the wrong size
        bad = replica_pb2.SearchRequest(sender_node_id=far_id, lookup=lookup, vector=b"\0" * 12, min_similarity=0.9)
        with pytest.raises(grpc.RpcError) as refused:
            far.call(replica_pb2_grpc.ReplicaStub, "Search", bad)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "384 float32" in (refused.value.details() or "")
    finally:
        far.stop(timeout=20)
    wait_until(lambda: "c2-far" not in mesh.api.peer_names(), 30, what="c2-api to see c2-far leave")


def test_a_semantic_entry_is_served_after_its_primary_is_sigkilled(mesh: Mesh) -> None:
    """Last in the module: it kills c2-store."""
    lookup = cache_pb2.CacheLookup(prompt="Who wrote Hamlet?", model=FAKE,
                                   params=common_pb2.GenerationParams(temperature=0))
    key = mesh.store.call(cache_pb2_grpc.CacheStub, "Put", cache_pb2.PutRequest(
        lookup=lookup, response="William Shakespeare (cached on c2-store)", semantic=True)).key

    def on_api() -> bool:
        reply = mesh.api.call(replica_pb2_grpc.ReplicaStub, "Fetch", replica_pb2.FetchRequest(key=key))
        return reply.found and len(reply.entry.embedding) == 384  # the vector travelled with the entry

    wait_until(on_api, 30, what="the replica copy (with its vector) on c2-api")
    mesh.store.stop(signal.SIGKILL)
    wait_until(lambda: "c2-store" not in mesh.api.peer_names(), 30, what="c2-api to drop c2-store")
    info = mesh.api.call(node_pb2_grpc.NodeStub, "GetInfo", node_pb2.GetInfoRequest()).info
    query = planner_pb2.Query(text="Who is the author of Hamlet?", model=FAKE,
                              params=common_pb2.GenerationParams(temperature=0),
                              cache=planner_pb2.CacheControl(semantic=True))
    task = mesh.api.call(planner_pb2_grpc.PlannerStub, "Ask", planner_pb2.AskRequest(query=query), timeout=60).task
    assert task.answer == "William Shakespeare (cached on c2-store)"
    step = task.steps[-1]
    assert step.cache == planner_pb2.CACHE_OUTCOME_SEMANTIC_HIT and step.node_id == info.node_id
    assert step.cache_match.matched_prompt == "Who wrote Hamlet?" and step.cache_match.similarity >= 0.9
