"""Planner decisions that need no mesh: deterministic rules, proposal validation, the task store."""

from __future__ import annotations

import pytest

from llmlab_grpc.planner.proposal import parse_proposal, proposal_messages
from llmlab_grpc.planner.rules import match_rules, might_need_tool
from llmlab_grpc.planner.tasks import TaskStore
from llmlab_grpc.planner.workflow import cache_prompt, is_deterministic
from llmlab_grpc.proto.llmlab.v1 import common_pb2, planner_pb2


@pytest.mark.parametrize(
    ("query", "expression", "phrase"),
    [
        ("What is 25 * 67?", "25 * 67", False),
        ("what's 2^10", "2**10", False),
        ("What is 25 x 67?", "25 * 67", False),
        ("What is 25 \u00d7 67?", "25 * 67", False),
        ("10 \u00f7 4", "10 / 4", False),
        ("calculate sqrt(16) + 2", "sqrt(16) + 2", False),
        ("what is (3+4)*2", "(3+4)*2", False),
        ("what is the max(3, 9) - 1", "max(3, 9) - 1", False),
        ("Explain why 25 * 67 is bigger than 1000", "25 * 67", True),
    ],
)
def test_arithmetic_goes_to_the_calculator(query: str, expression: str, phrase: bool) -> None:
    rule = match_rules(query)
    assert rule is not None
    assert rule.tool == "calculator"
    assert rule.arguments == {"expression": expression}
    assert rule.phrase_with_model is phrase
    assert expression in rule.reason


@pytest.mark.parametrize(
    "query",
    ["Tell me a joke", "What is -5?", "In 2024-05 we met", "I have 2 cats - and 3 dogs",
     "How are you today, 3 friends?"],
)
def test_not_everything_with_a_number_is_arithmetic(query: str) -> None:
    assert match_rules(query) is None


@pytest.mark.parametrize(
    ("query", "q"),
    [("search for ray object store", "ray object store"), ("look up zeroconf", "zeroconf"),
     ("Search the web for gRPC health checking?", "gRPC health checking")],
)
def test_search_requests_go_to_web_search(query: str, q: str) -> None:
    rule = match_rules(query)
    assert rule is not None and rule.tool == "web_search" and rule.arguments == {"query": q}


def test_urls_go_to_the_browser() -> None:
    rule = match_rules("take a screenshot of http://127.0.0.1:8000/page. and summarise it")
    assert rule is not None and rule.tool == "browser"
    assert rule.arguments == {"url": "http://127.0.0.1:8000/page", "screenshot": True}
    assert rule.phrase_with_model
    opened = match_rules("open example.com")
    assert opened is not None and opened.arguments == {"url": "https://example.com", "screenshot": False}
    assert not opened.phrase_with_model
    assert match_rules("open the door") is None


def test_tool_gate() -> None:
    assert might_need_tool("Can you search the news about Ray?")
    assert not might_need_tool("Tell me a joke")


CATALOGUE = {
    "calculator": {"description": "arithmetic", "input_schema": {
        "type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"],
        "additionalProperties": False}},
}


@pytest.mark.parametrize(
    ("output", "tool", "reason"),
    [
        ('{"tool": "calculator", "arguments": {"expression": "2+2"}}', "calculator", "validated"),
        ('Sure! {"tool": "calculator", "arguments": {"expression": "2+2"}} hope it helps', "calculator", "validated"),
        ('{"tool": null}', None, "no tool is needed"),
        ("I think you should use the calculator", None, "no JSON tool call"),
        ('{"tool": "calculator", "arguments": {"expression": "2+2"', None, "no JSON tool call"),
        ('{"tool": calculator}', None, "invalid JSON"),
        ('{"tool": "teleport", "arguments": {}}', None, "unknown tool 'teleport'"),
        ('{"tool": "calculator", "arguments": {"expr": "2"}}', None, "fail its schema"),
        ('{"tool": "calculator", "arguments": "2+2"}', None, "wrong shape"),
    ],
)
def test_proposals_are_validated_before_they_run(output: str, tool: str | None, reason: str) -> None:
    proposal = parse_proposal(output, CATALOGUE)
    assert proposal.tool == tool
    assert reason in proposal.reason


def test_proposal_prompt_shows_the_schemas() -> None:
    messages = proposal_messages("what is two plus two", CATALOGUE)
    assert '"expression"' in messages[0]["content"] and messages[1]["content"] == "what is two plus two"


def test_task_store_is_bounded_and_newest_first() -> None:
    store = TaskStore(capacity=3)
    for i in range(5):
        store.save(planner_pb2.Task(task_id=f"t{i}"))
    assert len(store) == 3
    assert [t.task_id for t in store.newest(10)] == ["t4", "t3", "t2"]
    assert store.get("t0") is None and store.get("t4") is not None
    store.save(planner_pb2.Task(task_id="t2", answer="updated"))
    assert store.newest(1)[0].task_id == "t2"


def test_determinism_and_cache_prompt() -> None:
    assert is_deterministic(common_pb2.GenerationParams(temperature=0.0))
    assert is_deterministic(common_pb2.GenerationParams(temperature=0.9, seed=1))
    assert not is_deterministic(common_pb2.GenerationParams(temperature=0.9))
    assert not is_deterministic(common_pb2.GenerationParams())
    lone = [common_pb2.ChatMessage(role="user", content="Tell me a joke")]
    assert cache_prompt(lone) == "Tell me a joke"
    two = [common_pb2.ChatMessage(role="system", content="be brief"), *lone]
    assert cache_prompt(two) != cache_prompt(lone) and "be brief" in cache_prompt(two)
