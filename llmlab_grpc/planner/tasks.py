"""A bounded, newest-first store of tasks, for ``GetTask``/``ListTasks`` and the dashboard."""

from __future__ import annotations

from collections import OrderedDict

from llmlab_grpc.proto.llmlab.v1 import planner_pb2

MAX_TASKS = 500
"""Tasks kept per planner node; the oldest is forgotten first."""


class TaskStore:
    """task_id → Task, dropping the oldest beyond ``capacity``."""

    def __init__(self, capacity: int = MAX_TASKS) -> None:
        self._capacity = capacity
        self._tasks: OrderedDict[str, planner_pb2.Task] = OrderedDict()

    def save(self, task: planner_pb2.Task) -> None:
        self._tasks[task.task_id] = task
        self._tasks.move_to_end(task.task_id)
        while len(self._tasks) > self._capacity:
            self._tasks.popitem(last=False)

    def get(self, task_id: str) -> planner_pb2.Task | None:
        return self._tasks.get(task_id)

    def newest(self, limit: int) -> list[planner_pb2.Task]:
        return list(reversed(self._tasks.values()))[:limit]

    def __len__(self) -> int:
        return len(self._tasks)
