"""A cache hit's ``Task`` written as protobuf bytes by hand, from parts serialized once.

Why: the planner's hit path (``Planner._ask`` without a workflow) built each hit's task as
messages: the task parsed from the query's head, its step filled field by field from the
cached answer, two timestamps, then the whole serialized for the reply and the task store:
~45k of the ~100k instructions of Python a ``Planner.Ask`` hit ran (callgrind). All of it but
five fields is the same for every hit of the same question on the same entry: the task's id,
its ``created_at`` and ``total_ms``, and its step's ``started_at`` and ``duration_ms``. So the
rest is serialized once per (query head, model, cached answer, holder's name) into a
``HitTemplate``, kept in a small LRU (``HitTemplates``), and a hit splices the five fields in
(``HitTemplates.write``, ~18k: they are set in one scratch task and serialized by
protobuf, as a timestamp's varints written in Python cost more than the message path did).

The bytes are exactly what ``Task.SerializeToString()`` gives for the task the message path
builds (protobuf writes fields in field-number order, and the template's parts are the
task's fields before, between and after the five): ``tests/test_planner_hit_wire.py``
compares them byte for byte.

Bounded: ``TEMPLATE_ENTRIES`` templates, and only those of at most ``TEMPLATE_MAX_BYTES``
(their parts, plus the cached answer their key holds): 4 MiB at most. A larger hit is
written from a template made for it alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from google.protobuf.message import Message

from llmlab_grpc.cache.entry import CachedAnswer
from llmlab_grpc.cache.wire import varint
from llmlab_grpc.memo import BoundedMemo
from llmlab_grpc.proto.llmlab.v1 import planner_pb2

TEMPLATE_ENTRIES = 256
"""Hit templates remembered per planner (least recently used out)."""
TEMPLATE_MAX_BYTES = 16 * 1024
"""Largest template remembered (its parts and the answer its key holds)."""

_TASK = planner_pb2.Task.DESCRIPTOR.fields_by_name
_STEP = planner_pb2.Step.DESCRIPTOR.fields_by_name
assert (_TASK["task_id"].number, _TASK["steps"].number, _TASK["created_at"].number, _TASK["total_ms"].number,
        _STEP["started_at"].number, _STEP["duration_ms"].number) == (1, 5, 6, 7, 8, 9)
_TASK_ID_16 = b"\x0a\x10"  # Task.task_id (field 1, length-delimited) of 16 characters
_STEPS_TAG = b"\x2a"  # Task.steps: field 5, length-delimited


def _fields(message: Message, low: int, high: int) -> bytes:
    """``message`` serialized with only its fields numbered ``low`` to ``high``."""
    part = type(message)()
    part.CopyFrom(message)
    for field in message.DESCRIPTOR.fields:
        if not low <= field.number <= high:
            part.ClearField(field.name)
    return part.SerializeToString()


@dataclass(frozen=True, slots=True)
class HitTemplate:
    """A hit's task serialized around its five per-hit fields."""

    head: bytes
    """The task's fields 2-4 (query preview, status, answer)."""
    step_head: bytes
    """The step's fields 1-7 (id, kind, model, node, reason, cache outcome)."""
    step_tail: bytes
    """The step's fields from 10 on (output, usage, cache match...)."""
    tail: bytes
    """The task's fields from 8 on (planner node, query digest, truncation)."""

    @classmethod
    def of(cls, task: planner_pb2.Task) -> HitTemplate:
        """The template of ``task``: a finished hit with its one step (the five fields are ignored)."""
        (step,) = task.steps
        return cls(head=_fields(task, 2, 4), step_head=_fields(step, 1, 7), step_tail=_fields(step, 10, 1 << 29),
                   tail=_fields(task, 8, 1 << 29))

    def size(self) -> int:
        return len(self.head) + len(self.step_head) + len(self.step_tail) + len(self.tail)



class WrittenHit(NamedTuple):
    """An exact hit's task as the planner wrote it: the bytes, and what they were written from."""

    encoded: bytes
    """The serialized ``Task``."""
    template: HitTemplate
    task_id: str
    created_ns: int
    total_ms: float
    started_ns: int
    duration_ms: float


TemplateKey = tuple[bytes, str, CachedAnswer, str]
"""(the query's task head, the model, the cached answer, the name of the node holding it)."""


class HitTemplates(BoundedMemo[TemplateKey, HitTemplate]):
    """``TemplateKey`` -> ``HitTemplate``, at most ``capacity`` of them, least recently used out."""

    def __init__(self, capacity: int = TEMPLATE_ENTRIES, max_bytes: int = TEMPLATE_MAX_BYTES) -> None:
        super().__init__(capacity, max_bytes)
        # A scratch task the per-hit fields are set in and serialized by protobuf (in C: a
        # timestamp's varints written in Python cost twice the message path they replace): its
        # one step's started_at and duration_ms, its created_at and total_ms, nothing else.
        # Every field of it is set on every use; the planner runs on one event loop.
        self._scratch = planner_pb2.Task()
        step = self._scratch.steps.add()
        self._started = step.started_at
        self._step = step
        self._created = self._scratch.created_at

    def put(self, key: TemplateKey, template: HitTemplate) -> None:
        """Remember ``template`` (one too large to remember is not kept)."""
        self._keep(key, template, template.size() + len(key[0]) + sum(len(v) for v in key[2] if isinstance(v, str)))

    def write(self, template: HitTemplate, task_id: str, created_ns: int, total_ms: float, started_ns: int,
              duration_ms: float) -> bytes:
        """The serialized ``Task`` of one hit: ``template`` with its id, times and durations."""
        self._started.seconds, self._started.nanos = divmod(started_ns, 1_000_000_000)
        self._step.duration_ms = duration_ms
        self._created.seconds, self._created.nanos = divmod(created_ns, 1_000_000_000)
        self._scratch.total_ms = total_ms
        # steps (field 5: tag, one length byte: a timestamp and a double are under 128 bytes),
        # then created_at and total_ms (fields 6, 7)
        times = self._scratch.SerializeToString()
        end = 2 + times[1]
        step_bytes = b"".join((template.step_head, times[2:end], template.step_tail))
        encoded_id = task_id.encode()
        size = len(encoded_id)
        id_field = _TASK_ID_16 + encoded_id if size == 16 else b"\x0a" + varint(size) + encoded_id if size else b""
        return b"".join((id_field, template.head, _STEPS_TAG, varint(len(step_bytes)), step_bytes, times[end:],
                         template.tail))

    def written(self, template: HitTemplate, task_id: str, created_ns: int, total_ms: float, started_ns: int,
                duration_ms: float) -> WrittenHit:
        """``write``, with what it was written from."""
        return WrittenHit(self.write(template, task_id, created_ns, total_ms, started_ns, duration_ms), template,
                          task_id, created_ns, total_ms, started_ns, duration_ms)
