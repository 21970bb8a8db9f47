"""A bounded, newest-first store of tasks, for ``GetTask``/``ListTasks`` and the dashboard.

Bounded twice: by count (``capacity``) and by bytes (``max_bytes``, the serialized size of
what is kept), oldest forgotten first. A query is kept as a preview (``preview_query``: text,
history turns and long params cut, ``query_sha256`` naming the whole), and a stored task
over ``MAX_TASK_BYTES`` is kept as a copy with its answer, step outputs and arguments cut
(``trace_truncated``), so one request can neither grow the store nor make ``ListTasks``
exceed a gRPC message. ``page`` serves ``ListTasks`` in pages under a byte budget.
"""

from __future__ import annotations

import builtins
import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from llmlab_grpc.proto.llmlab.v1 import common_pb2, planner_pb2

MAX_TASKS = 500
"""Tasks kept per planner node; the oldest is forgotten first."""
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Bytes of tasks kept per planner node (``planner_tasks_max_bytes``)."""
MAX_TASK_BYTES = 256 * 1024
"""Largest stored task; a larger one is kept with its answer, outputs and arguments cut."""
PAGE_MAX_BYTES = 3 * 1024 * 1024
"""Bytes of tasks in one ``ListTasks`` page: under the 4 MiB a default gRPC client accepts."""
TEXT_PREVIEW_CHARS = 2_000
"""Characters of the query text kept."""
TURN_PREVIEW_CHARS = 200
"""Characters of each history turn (and of a long string param) kept."""
CUT_ANSWER_CHARS = 16_000
"""Characters of the answer a cut task keeps."""
CUT_OUTPUT_CHARS = 2_000
"""Characters of each step output (and error, reason) a cut task keeps."""
CUT_ARGUMENTS_BYTES = 2_048
"""Step arguments larger than this are replaced by a preview in a cut task."""


def _cut(text: str, chars: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= chars else (text[:chars] + "…", True)


def query_digest(query: planner_pb2.Query) -> str:
    """sha256 hex of the query's deterministic encoding: the same query, the same digest."""
    return digest_of(query.SerializeToString(deterministic=True))


def digest_of(encoded: bytes) -> str:
    """``query_digest`` of a query already encoded (``SerializeToString(deterministic=True)``)."""
    return hashlib.sha256(encoded).hexdigest()


def _cut_turn(turn: common_pb2.ChatMessage) -> tuple[common_pb2.ChatMessage, bool]:
    fields = {name: _cut(getattr(turn, name), TURN_PREVIEW_CHARS)
              for name in ("role", "content", "tool_call_id", "tool_calls_json")}
    return common_pb2.ChatMessage(**{k: v for k, (v, _) in fields.items()}), any(c for _, c in fields.values())


def preview_query(query: planner_pb2.Query, size: int | None = None) -> tuple[planner_pb2.Query, bool]:
    """A copy of ``query`` with text, history turns and long string params cut; whether anything was cut.

    Built field by field, never copying a long field whole (a 4 MiB history costs its previews
    only). A query smaller than any preview is returned as it is (the common case costs nothing).
    ``size``: the query's encoded bytes, when the caller knows them.
    """
    if (query.ByteSize() if size is None else size) <= TURN_PREVIEW_CHARS:
        return query, False
    history = query.history
    kept = planner_pb2.Query()
    kept.CopyFrom(query)  # the scalar options, params and any field added later
    kept.ClearField("history")
    kept.ClearField("text")
    params = kept.params
    params.ClearField("system_prompt")
    params.ClearField("tools_json")
    del params.stop[:]
    kept.text, cut = _cut(query.text, TEXT_PREVIEW_CHARS)
    for turn in history:
        short, turn_cut = _cut_turn(turn)
        kept.history.append(short)
        cut = cut or turn_cut
    params.system_prompt, c5 = _cut(query.params.system_prompt, TURN_PREVIEW_CHARS)
    params.tools_json, c6 = _cut(query.params.tools_json, TURN_PREVIEW_CHARS)
    stops = list(query.params.stop)
    short_stops = [_cut(s, TURN_PREVIEW_CHARS)[0] for s in stops[:16]]
    params.stop.extend(short_stops)
    kept.model, c7 = _cut(query.model, TURN_PREVIEW_CHARS)
    return kept, cut or c5 or c6 or c7 or short_stops != stops


def cut_task(task: planner_pb2.Task) -> planner_pb2.Task:
    """A copy of ``task`` whose answer, step outputs and large arguments are cut (``trace_truncated``)."""
    kept = planner_pb2.Task()
    kept.CopyFrom(task)
    if not kept.query_sha256:
        kept.query_sha256 = query_digest(task.query)
    query, query_cut = preview_query(task.query)
    kept.query.CopyFrom(query)
    kept.query_truncated = kept.query_truncated or query_cut
    kept.answer = _cut(task.answer, CUT_ANSWER_CHARS)[0]
    kept.error = _cut(task.error, CUT_OUTPUT_CHARS)[0]
    for step in kept.steps:
        step.output = _cut(step.output, CUT_OUTPUT_CHARS)[0]
        step.error = _cut(step.error, CUT_OUTPUT_CHARS)[0]
        step.reason = _cut(step.reason, CUT_OUTPUT_CHARS)[0]
        if step.arguments.ByteSize() > CUT_ARGUMENTS_BYTES:
            preview = str(dict(step.arguments.items()))[:CUT_OUTPUT_CHARS]
            step.arguments.Clear()
            step.arguments.update({"truncated_preview": preview})
        if step.usage.ByteSize() > CUT_ARGUMENTS_BYTES:
            step.usage.tool_calls_json = _cut(step.usage.tool_calls_json, CUT_OUTPUT_CHARS)[0]
    del kept.steps[64:]
    kept.trace_truncated = True
    return kept


@dataclass(slots=True)
class _Kept:
    seq: int
    task: planner_pb2.Task | None
    """None while the task is kept as ``encoded`` (``save_encoded``): parsed on its first read."""
    size: int
    encoded: bytes = b""

    def read(self) -> planner_pb2.Task:
        task = self.task
        if task is None:
            task = self.task = planner_pb2.Task.FromString(self.encoded)
            self.encoded = b""
        return task


class TaskStore:
    """task_id → Task, newest-saved last; the oldest go beyond ``capacity`` tasks or ``max_bytes``."""

    def __init__(self, capacity: int = MAX_TASKS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._tasks: OrderedDict[str, _Kept] = OrderedDict()
        self._bytes = 0
        self._seq = 0

    @property
    def bytes(self) -> int:
        """Serialized bytes of the tasks kept, as measured when each was last saved."""
        return self._bytes

    def save(self, task: planner_pb2.Task, size: int | None = None) -> None:
        """Keep ``task`` (the object itself, so a running task's steps show; a cut copy when too large).

        ``size``: ``task.ByteSize()`` when the caller has just encoded it (the planner's hit path).
        """
        if size is None:
            size = task.ByteSize()
        if size > MAX_TASK_BYTES:
            task = cut_task(task)
            size = task.ByteSize()
        self._keep(task.task_id, task, size)

    def save_encoded(self, task_id: str, encoded: builtins.bytes) -> None:
        """Keep a finished task given serialized (the planner's hit path, which has no message of it):
        its bytes are kept, and parsed when the task is first read (``get``, ``newest``, ``page``)."""
        if len(encoded) > MAX_TASK_BYTES:
            self.save(planner_pb2.Task.FromString(encoded))
            return
        self._keep(task_id, None, len(encoded), encoded)

    def _keep(self, task_id: str, task: planner_pb2.Task | None, size: int, encoded: builtins.bytes = b"") -> None:
        tasks = self._tasks
        old = tasks.pop(task_id, None)
        if old is not None:
            self._bytes -= old.size
        self._seq += 1
        tasks[task_id] = _Kept(self._seq, task, size, encoded)
        self._bytes += size
        while len(tasks) > self._capacity or (self._bytes > self._max_bytes and len(tasks) > 1):
            _, gone = tasks.popitem(last=False)
            self._bytes -= gone.size

    def get(self, task_id: str) -> planner_pb2.Task | None:
        kept = self._tasks.get(task_id)
        return None if kept is None else kept.read()

    def newest(self, limit: int) -> list[planner_pb2.Task]:
        return [kept.read() for kept in list(reversed(self._tasks.values()))[:limit]]

    def page(self, size: int, token: str = "", max_bytes: int = PAGE_MAX_BYTES
             ) -> tuple[list[planner_pb2.Task], str]:
        """Up to ``size`` tasks older than ``token`` (newest first) within ``max_bytes``; and the next token.

        The token is the save sequence of the last task returned: a task saved again meanwhile
        (it finished) moves to the front and is not repeated. ``ValueError`` for a malformed token.
        """
        after = int(token) if token else None
        if after is not None and after < 0:
            raise ValueError("negative page token")
        tasks: list[planner_pb2.Task] = []
        used = 0
        last = 0
        more = False
        for kept in reversed(self._tasks.values()):
            if after is not None and kept.seq >= after:
                continue
            if len(tasks) >= size or (tasks and used + kept.size > max_bytes):
                more = True
                break
            tasks.append(kept.read())
            used += kept.size
            last = kept.seq
        return tasks, (str(last) if more else "")

    def __len__(self) -> int:
        return len(self._tasks)
