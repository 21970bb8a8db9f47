"""An exact hit's task written as bytes (planner/hit_wire.py) is the task the message path builds.

Compared byte for byte with ``Task.SerializeToString()`` of the task built field by field the
way the planner's hit path did before (``fill_from_answer`` on the query's head and hit step),
for answers and times at the edges of the wire format: zero durations, a whole second, empty
and non-ASCII answers, a holder that is this node, a peer or unknown.
"""

from __future__ import annotations

import pytest

from llmlab_grpc.cache.entry import CachedAnswer
from llmlab_grpc.config import NodeSettings
from llmlab_grpc.mesh.channels import ChannelPool
from llmlab_grpc.mesh.known_models import KnownModels
from llmlab_grpc.mesh.peers import PeerTable
from llmlab_grpc.planner.hit_wire import HitTemplate, HitTemplates
from llmlab_grpc.planner.mesh_calls import MeshCalls
from llmlab_grpc.planner.planner import Planner, hit_step_head
from llmlab_grpc.planner.prelude import Prelude
from llmlab_grpc.planner.tasks import MAX_TASK_BYTES, TaskStore
from llmlab_grpc.planner.workflow import fill_from_answer
from llmlab_grpc.ports import PLANNER_TASKS, LoadMeter, LocalNode
from llmlab_grpc.proto.llmlab.v1 import common_pb2, planner_pb2
from tests.test_planner_ports import AbortingContext, wire_ask

MODEL = "smollm2-135m"


def planner_alone() -> Planner:
    me = LocalNode("p1", "planner-1", ["planner"], "mesh", 0, address="127.0.0.1:9")
    meter = LoadMeter()
    calls = MeshCalls(me, PeerTable("p1"), ChannelPool("unit-test-secret"), meter, KnownModels(None, "mesh"),
                      first_token_timeout_s=20.0, heartbeat_interval_s=1.0, local_cache=None)
    return Planner(calls, NodeSettings(name="planner-1", mdns=False), meter.claim(PLANNER_TASKS))


def by_messages(planner: Planner, head: bytes, model: str, answer: CachedAnswer, task_id: str, created_ns: int,
                total_ms: float, started_ns: int, duration_ms: float) -> bytes:
    """The hit's task as the message path builds it, field by field, serialized."""
    task = planner_pb2.Task()
    task.MergeFromString(head + hit_step_head(model))
    task.task_id = task_id
    task.created_at.FromNanoseconds(created_ns)
    step = task.steps[0]
    step.started_at.FromNanoseconds(started_ns)
    text = fill_from_answer(planner.calls, step, answer)
    step.duration_ms = duration_ms
    step.output = text
    task.status = planner_pb2.TASK_STATUS_SUCCEEDED
    task.answer = text.strip()
    task.total_ms = total_ms
    return task.SerializeToString()


def answer_of(response: str, node_id: str = "p1", **fields: object) -> CachedAnswer:
    values: dict[str, object] = {"key": "k" * 64, "prompt": "Name a primary colour.", "semantic_text": "",
                                 "namespace": "", "response": response, "node_id": node_id, "prompt_tokens": 0,
                                 "completion_tokens": 0, "finish_reason": ""}
    values.update(fields)
    return CachedAnswer(**values)  # type: ignore[arg-type]


HEAD = planner_pb2.Task(query=planner_pb2.Query(text="Name a primary colour.", model=MODEL),
                        status=planner_pb2.TASK_STATUS_RUNNING, planner_node_id="p1", query_sha256="ab" * 32
                        ).SerializeToString()
TIMES = [  # created_ns, total_ms, started_ns, duration_ms
    (1_764_000_000_123_456_789, 0.731, 1_764_000_000_123_500_000, 0.412),
    (1_764_000_000_000_000_000, 0.0, 1_764_000_000_000_000_001, 0.0),  # whole second; zero durations
    (999, 12345.678, 1_000_000_000, 1e-9),  # no seconds; no nanos
]
ANSWERS = [
    answer_of("Red."),
    answer_of("  Blue, with spaces around.\n", prompt_tokens=7, completion_tokens=3, finish_reason="length"),
    answer_of("", namespace="team-a"),
    answer_of("Grün — ünïcödé 🎨", semantic_text="a primary colour?", node_id="peer-9"),  # unknown holder
    answer_of("x" * 20_000),  # larger than a remembered template
]


@pytest.mark.parametrize("answer", ANSWERS, ids=["plain", "usage", "empty", "unicode", "large"])
@pytest.mark.parametrize("times", TIMES, ids=["usual", "zeros", "edges"])
def test_a_template_writes_the_bytes_the_message_path_serializes(answer: CachedAnswer,
                                                                 times: tuple[int, float, int, float]) -> None:
    planner = planner_alone()
    task_id = "0123456789abcdef"
    reference = by_messages(planner, HEAD, MODEL, answer, task_id, *times)
    template = HitTemplate.of(_hit_task(planner, answer))
    templates = HitTemplates()
    for _ in range(2):  # the scratch messages hold nothing of the call before
        assert templates.write(template, task_id, *times) == reference
    assert templates.write(template, task_id * 2, *times) == by_messages(planner, HEAD, MODEL, answer, task_id * 2,
                                                                         *times)
    parsed = planner_pb2.Task.FromString(reference)
    assert parsed.answer == answer.response.strip() and parsed.steps[0].output == answer.response


def _hit_task(planner: Planner, answer: CachedAnswer) -> planner_pb2.Task:
    prelude = Prelude(task_head=HEAD, text="Name a primary colour.", params=common_pb2.GenerationParams(),
                      params_raw=b"", hints=None, lone_turn=True, hit_path=True)
    return planner._hit_task(prelude, MODEL, answer)


def test_templates_are_bounded_by_count_and_by_size() -> None:
    planner = planner_alone()
    small, large = ANSWERS[0], ANSWERS[-1]
    templates = HitTemplates(capacity=2)
    for i in range(3):
        templates.put((HEAD, f"model-{i}", small, ""), HitTemplate.of(_hit_task(planner, small)))
    assert len(templates) == 2 and templates.get((HEAD, "model-0", small, "")) is None
    templates.put((HEAD, MODEL, large, ""), HitTemplate.of(_hit_task(planner, large)))
    assert len(templates) == 2 and templates.get((HEAD, MODEL, large, "")) is None


def test_the_task_store_keeps_an_encoded_task_and_reads_it_as_the_message() -> None:
    store = TaskStore()
    task = planner_pb2.Task(task_id="t1", answer="Red.", status=planner_pb2.TASK_STATUS_SUCCEEDED)
    encoded = task.SerializeToString()
    store.save_encoded("t1", encoded)
    assert store.bytes == len(encoded) and len(store) == 1
    assert store.get("t1") == task and store.get("t1") is store.get("t1")  # parsed once
    assert store.newest(5) == [task] and store.page(5) == ([task], "")
    big = planner_pb2.Task(task_id="t2", answer="y" * (MAX_TASK_BYTES + 10))
    store.save_encoded("t2", big.SerializeToString())
    kept = store.get("t2")
    assert kept is not None and kept.trace_truncated and store.bytes == len(encoded) + kept.ByteSize()


async def test_hits_asked_over_bytes_and_as_messages_are_the_same_task_but_for_id_and_times() -> None:
    cache, key, planner, service, query, raw = await wire_ask("Name a primary colour.", "Red.")
    replies = [planner_pb2.AskResponse.FromString(await service.ask_wire(raw, AbortingContext())).task  # type: ignore[arg-type]
               for _ in range(2)]
    asked = [(await planner.ask(query))[0] for _ in range(2)]
    assert len(planner.hit_templates) == 1  # one template served all four
    assert len({t.task_id for t in replies + asked}) == 4
    for task in replies + asked:
        assert planner.store.get(task.task_id) == task
        assert task.steps[0].cache == planner_pb2.CACHE_OUTCOME_HIT and task.steps[0].cache_match.key == key
        assert task.created_at.ToNanoseconds() > 0 and task.steps[0].started_at.ToNanoseconds() > 0
        assert without_ids_and_times(task) == without_ids_and_times(replies[0])
    assert cache.manager.get_stats()["hits"] == 4


def without_ids_and_times(task: planner_pb2.Task) -> planner_pb2.Task:
    """A copy of a hit's task without the five fields each hit has its own of."""
    kept = planner_pb2.Task()
    kept.CopyFrom(task)
    for name in ("task_id", "created_at", "total_ms"):
        kept.ClearField(name)
    for name in ("started_at", "duration_ms"):
        kept.steps[0].ClearField(name)
    return kept
