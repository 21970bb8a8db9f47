"""A ``/v1`` answer to an exact cache hit written from a JSON template (openai_api/hit_answers.py)
is byte for byte the answer the ordinary way builds (``translate.answer`` encoded by ``to_json``).

The planner is real, with a real in-memory cache (tests/test_planner_ports.py's helpers); the
hits are the planner's own ``WrittenHit``s, so ids and times are a hit's real ones.
"""

from __future__ import annotations

import pytest
from pydantic_core import to_json

from llmlab_grpc.openai_api import translate
from llmlab_grpc.openai_api.hit_answers import HitAnswers
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
