"""A ``/v1`` answer to an exact cache hit written from a JSON template (openai_api/hit_answers.py)
is byte for byte the answer the ordinary way builds (``translate.answer`` encoded by ``to_json``);
a body sent again is validated and translated once (openai_api/request_memo.py).

The planner is real, with a real in-memory cache (tests/test_planner_ports.py's helpers); the
hits are the planner's own ``WrittenHit``s, so ids and times are a hit's real ones.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic_core import to_json
from starlette.applications import Starlette

from llmlab_grpc.config import NodeSettings
from llmlab_grpc.openai_api import translate
from llmlab_grpc.openai_api.auth import MESH
from llmlab_grpc.openai_api.gateway import PlannerGateway
from llmlab_grpc.openai_api.hit_answers import HitAnswers
from llmlab_grpc.openai_api.request_memo import RequestMemo
from llmlab_grpc.openai_api.routes import OpenAIApi
from llmlab_grpc.openai_api.schemas import ChatCompletionRequest
from llmlab_grpc.planner.hit_wire import WrittenHit
from llmlab_grpc.ports import LoadMeter
from llmlab_grpc.proto.llmlab.v1 import planner_pb2
from tests.test_planner_ports import MODEL, planner_with, real_cache_with

ANSWERS = ["Red.", 'She said "hi"\n\tand left \\ 🎨 ünïcödé', "", "x" * 40_000]


def ordinary(hit: WrittenHit, model: str, created: int) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body and the llmlab headers the route writes for any finished task."""
    task = planner_pb2.Task.FromString(hit.encoded)
    headers = [*translate.cache_header_pairs(translate.answer_step(task)), (b"x-llmlab-task-id", task.task_id.encode())]
    return to_json(translate.answer(task, model, created)), headers


@pytest.mark.parametrize("answer", ANSWERS, ids=["plain", "escapes", "empty", "large"])
async def test_a_templated_answer_is_the_ordinary_answer(answer: str) -> None:
    prompt = "Name a primary colour."
    cache, _ = await real_cache_with(prompt, answer)
    planner = planner_with(cache, LoadMeter())
    answers = HitAnswers()
    query = planner_pb2.Query(text=prompt, model=MODEL)
    for i, (model, created) in enumerate([(MODEL, 1_764_000_000), (MODEL, 1_764_000_001), ("alias", 7),
                                          (MODEL, 1_764_000_002)]):
        hit, status = await planner.ask_written(query)
        assert status is None and isinstance(hit, WrittenHit), hit
        stored = planner.store.get(hit.task_id)
        assert stored is not None and stored.SerializeToString() == hit.encoded
        response = answers.response(hit, model, created)
        body, headers = ordinary(hit, model, created)
        assert response.body == body, i
        assert [(k, v) for k, v in response.raw_headers if k.startswith(b"x-llmlab")] == headers
        assert (b"content-type", b"application/json") in response.raw_headers
        assert (answers.kept(hit, model) is None) == (len(answer) > 30_000)  # templated unless too large
    assert len(answers) == 2  # one per (hit template, model), kept or refused (the large one)
    assert cache.manager.get_stats()["hits"] == 4


async def test_answer_templates_are_bounded() -> None:
    answers = HitAnswers(capacity=1)
    cache, _ = await real_cache_with("Name a primary colour.", "Red.")
    planner = planner_with(cache, LoadMeter())
    hit, _ = await planner.ask_written(planner_pb2.Query(text="Name a primary colour.", model=MODEL))
    assert isinstance(hit, WrittenHit)
    for model in ("a", "b", "c"):
        assert answers.response(hit, model, 1).body == ordinary(hit, model, 1)[0]
    assert len(answers) == 1


# -- the request memo (openai_api/request_memo.py), through the routes ---------------------------


async def test_a_body_sent_again_is_validated_once_and_a_refused_one_never_remembered(tmp_path: Path) -> None:
    prompt = "Name a primary colour."
    cache, _ = await real_cache_with(prompt, "Red.")
    planner = planner_with(cache, LoadMeter())
    planner.calls.me.models.append(MODEL)
    settings = NodeSettings(name="planner-1", mdns=False, mesh_secret="s" * 24, api_keys_file=tmp_path / "keys.json")
    api = OpenAIApi(settings, PlannerGateway(planner.calls, planner))
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
    transport = httpx.ASGITransport(app=Starlette(routes=api.routes()))
    async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                 headers={"authorization": f"Bearer {'s' * 24}"}) as client:
        answers = [await client.post("/v1/chat/completions", json=body) for _ in range(3)]
        assert [a.status_code for a in answers] == [200] * 3 and len(api.requests) == 1
        assert {a.headers["x-llmlab-cache"] for a in answers} == {"hit"}
        assert len({a.json()["id"] for a in answers}) == 3
        assert {a.json()["choices"][0]["message"]["content"] for a in answers} == {"Red."}
        aged = await client.post("/v1/chat/completions", json=body, headers={"cache-control": "max-age=60"})
        assert aged.status_code == 200 and len(api.requests) == 2  # another header: another entry
        for refused in ({"model": MODEL, "messages": [{"role": "assistant", "content": "hi"}]},
                        {"model": MODEL, "messages": []}):
            for _ in range(2):
                assert (await client.post("/v1/chat/completions", json=refused)).status_code == 400
        assert (await client.post("/v1/chat/completions", content=b"{not json")).status_code == 400
        assert len(api.requests) == 2
    assert cache.manager.get_stats()["hits"] == 4


def test_the_request_memo_is_bounded() -> None:
    memo = RequestMemo(capacity=2, max_body_bytes=100)
    chat = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    for i in range(3):
        memo.put((b"body %d" % i, "", MESH, frozenset()), chat, b"")
    assert len(memo) == 2 and memo.get((b"body 0", "", MESH, frozenset())) is None
    memo.put((b"x" * 101, "", MESH, frozenset()), chat, b"")
    assert len(memo) == 2 and memo.get((b"x" * 101, "", MESH, frozenset())) is None
