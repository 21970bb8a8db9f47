"""The node's ports (llmlab_grpc/ports.py): one writer per load counter and for the cache statistics."""

from __future__ import annotations

import pytest

from llmlab_grpc.ports import (
    GENERATIONS_RUNNING,
    PLANNER_TASKS,
    TOKENS_PER_SECOND,
    TOOL_CALLS,
    TOOLS_RUNNING,
    CacheStatsSlot,
    LoadMeter,
)
from llmlab_grpc.proto.llmlab.v1 import common_pb2


def test_in_flight_is_planner_tasks_plus_tool_calls_each_counted_by_its_owner() -> None:
    meter = LoadMeter()
    tasks, calls, running = meter.claim(PLANNER_TASKS), meter.claim(TOOL_CALLS), meter.claim(TOOLS_RUNNING)
    generations, speed = meter.claim(GENERATIONS_RUNNING), meter.claim(TOKENS_PER_SECOND)
    tasks.add(2)
    with calls.counting(), running.counting():
        generations.add(3)
        speed.set(41.5)
        assert meter.proto() == common_pb2.NodeLoad(in_flight=3, tools_running=1, generations_running=3,
                                                    tokens_per_second=41.5)
    with pytest.raises(RuntimeError), calls.counting():
        raise RuntimeError("a failed call still leaves the count")
    assert meter.proto().in_flight == 2 and meter.proto().tools_running == 0


def test_a_counter_has_one_writer() -> None:
    meter = LoadMeter()
    meter.claim(PLANNER_TASKS)
    with pytest.raises(RuntimeError, match="already has a writer"):
        meter.claim(PLANNER_TASKS)
    with pytest.raises(KeyError):
        meter.claim("in_flight")  # composed when read, never written


def test_the_cache_statistics_have_one_owner() -> None:
    slot = CacheStatsSlot()
    assert slot() is None
    slot.provide("the cache role", lambda: common_pb2.CacheStatistics(entries=7))
    assert slot() == common_pb2.CacheStatistics(entries=7)
    with pytest.raises(RuntimeError, match="the cache role"):
        slot.provide("the replica role", lambda: None)
