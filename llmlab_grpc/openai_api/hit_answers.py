"""A ``/v1`` answer to an exact cache hit, written from JSON serialized once per hit template.

Why: a non-streamed ``/v1`` hit built its ``chat.completion`` as dicts from the task's message
(``translate.answer``: every field of the task and its step read back out of protobuf) and
encoded them (``to_json``): ~120k instructions a hit by callgrind, over a third of what the
API's hit cost above a bare Starlette route. All of that JSON but five values is the same for
every hit the planner writes from the same ``HitTemplate`` (``planner/hit_wire.py``) for the
same requested model: the completion's id and ``created``, and the trace's ``task_id``,
``total_ms`` and the step's ``duration_ms``. So the answer of the first such hit is built the
ordinary way with a marker in place of each of the five, encoded, and cut at the markers; a
later hit joins the pieces around its own five values, each encoded as ``to_json`` encodes it
in the dict. A template is only kept when it gives, for the hit it was made from, exactly the
bytes the ordinary way gives (else that template's hits go the ordinary way).

Bounded: ``ANSWER_ENTRIES`` templates, each at most ``ANSWER_MAX_BYTES`` of JSON (a larger
one is not kept, and its kind of hit goes the ordinary way): 8 MiB at most, plus the hit
templates their keys share with the planner's memo (``hit_wire.TEMPLATE_MAX_BYTES`` each).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass

from pydantic_core import to_json
from starlette.responses import Response

from llmlab_grpc.openai_api import translate
from llmlab_grpc.planner.hit_wire import HitTemplate, WrittenHit
from llmlab_grpc.proto.llmlab.v1 import planner_pb2

ANSWER_ENTRIES = 256
"""Answer templates remembered per API (least recently used out)."""
ANSWER_MAX_BYTES = 32 * 1024
"""Largest answer template remembered (its JSON)."""
_SLOTS = ("id", "created", "task_id", "total_ms", "duration_ms")


@dataclass(frozen=True, slots=True)
class AnswerTemplate:
    """A hit's ``chat.completion`` JSON cut around its five per-hit values."""

    pieces: tuple[bytes, ...]
    """The JSON before, between and after the values (one more piece than values)."""
    order: tuple[int, ...]
    """Which value (an index into ``_SLOTS``) goes after each piece but the last."""
    headers: tuple[tuple[bytes, bytes], ...]
    """The cache headers of the answer (``translate.cache_header_pairs``)."""

    def size(self) -> int:
        return sum(len(piece) for piece in self.pieces)

    def render(self, hit: WrittenHit, created: int) -> bytes:
        task_id = hit.task_id
        quoted_id = (b'"' + task_id.encode() + b'"') if task_id.isalnum() and task_id.isascii() else to_json(task_id)
        values = (to_json(translate.completion_id(task_id)), str(created).encode(), quoted_id,
                  to_json(round(hit.total_ms, 2)), to_json(round(hit.duration_ms, 2)))
        pieces = self.pieces
        out = [pieces[0]]
        for i, slot in enumerate(self.order):
            out.append(values[slot])
            out.append(pieces[i + 1])
        return b"".join(out)


def _answer_of(task: planner_pb2.Task, model: str, created: int) -> bytes:
    """The ordinary way: ``translate.answer`` encoded as the route encodes it."""
    return to_json(translate.answer(task, model, created))


def _template_of(hit: WrittenHit, model: str, created: int) -> AnswerTemplate | None:
    """The answer template of ``hit``'s kind, or None when the cut JSON would not be the ordinary answer."""
    task = planner_pb2.Task.FromString(hit.encoded)
    answer = translate.answer(task, model, created)
    extension = answer["llmlab"]
    steps = extension["steps"]
    if len(steps) != 1:
        return None
    token = secrets.token_hex(16)
    markers = [f"llmlab-answer-slot-{token}-{name}" for name in _SLOTS]
    answer["id"], answer["created"] = markers[0], markers[1]
    extension["task_id"], extension["total_ms"] = markers[2], markers[3]
    steps[0]["duration_ms"] = markers[4]
    encoded = to_json(answer)
    found: list[tuple[int, int, int]] = []  # (where, which slot, marker length)
    for slot, marker in enumerate(markers):
        quoted = to_json(marker)
        if encoded.count(quoted) != 1:
            return None
        found.append((encoded.index(quoted), slot, len(quoted)))
    found.sort()
    pieces: list[bytes] = []
    start = 0
    for where, _, length in found:
        pieces.append(encoded[start:where])
        start = where + length
    pieces.append(encoded[start:])
    step = translate.answer_step(task)
    template = AnswerTemplate(tuple(pieces), tuple(slot for _, slot, _ in found),
                              tuple(translate.cache_header_pairs(step)))
    if template.render(hit, created) != _answer_of(task, model, created):
        return None
    return template


class HitAnswers:
    """(hit template, model) -> ``AnswerTemplate``, at most ``capacity`` of them, least recently used out."""

    def __init__(self, capacity: int = ANSWER_ENTRIES, max_bytes: int = ANSWER_MAX_BYTES) -> None:
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._kept: OrderedDict[tuple[HitTemplate, str], AnswerTemplate | None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def kept(self, hit: WrittenHit, model: str) -> AnswerTemplate | None:
        """The template answering hits like ``hit`` for ``model``, if one is kept."""
        return self._kept.get((hit.template, model))

    def response(self, hit: WrittenHit, model: str, created: int) -> Response:
        """The route's answer to ``hit``: the ``chat.completion`` JSON and its headers, as for any task."""
        key = (hit.template, model)
        kept = self._kept
        if key in kept:
            template = kept[key]
            kept.move_to_end(key)
        else:
            template = _template_of(hit, model, created)
            if template is not None and template.size() > self._max_bytes:
                template = None  # too large to keep: this kind of hit goes the ordinary way
            kept[key] = template
            while len(kept) > self._capacity:
                kept.popitem(last=False)
        if template is None:  # the ordinary way
            task = planner_pb2.Task.FromString(hit.encoded)
            response = Response(_answer_of(task, model, created), media_type="application/json")
            response.raw_headers += translate.cache_header_pairs(translate.answer_step(task))
        else:
            response = Response(template.render(hit, created), media_type="application/json")
            response.raw_headers += template.headers
        response.raw_headers.append((b"x-llmlab-task-id", hit.task_id.encode()))
        return response
