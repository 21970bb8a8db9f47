"""Planner decisions that need no mesh: deterministic rules, proposal validation, the task store."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmlab_grpc.planner.planner import MAX_QUERY_CHARS, RULES_INLINE_CHARS, hints_off_loop
from llmlab_grpc.planner.proposal import MAX_PROPOSAL_CHARS, parse_proposal, proposal_messages
from llmlab_grpc.planner.rules import (
    match_arithmetic,
    match_rules,
    match_search,
    match_url,
    might_need_tool,
    route_hints,
)
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


# -- no input holds the planner (issue 16) ---------------------------------------------------------

HANG_GUARD_S = 10.0
"""Far above what any rule takes at the length limit (tens of ms): tripping it means a hang, not
slowness. The cubic pattern this replaced took hours at 32,000 characters."""


class Hang(Exception):
    pass


@contextlib.contextmanager
def hang_guard(what: str) -> Iterator[None]:
    """Interrupt the body after ``HANG_GUARD_S`` (SIGALRM: ``re`` checks for signals while it matches)."""
    def fire(_signum: int, _frame: Any) -> None:
        raise Hang(f"{what} did not return within {HANG_GUARD_S} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, HANG_GUARD_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


RULES: list[Callable[[str], Any]] = [match_url, match_search, match_arithmetic, might_need_tool, route_hints]
# Pieces of what each pattern looks for, and what makes regexes backtrack: runs of spaces,
# optional words, digits and dots, unclosed parentheses, half URLs, wide characters.
TOKENS = ["search", "look", "look up", "lookup", "find", "google", "please", "web", "the web", "for", "open",
          "visit", "screenshot", "take a screenshot of", "show me", "http://", "https://", "a", "b", "ab",
          "1", "25", "0.5", ".", "?", "!", ",", ";", " ", "   ", "\t", "\n", "x", "X", "*", "**", "+", "-",
          "/", "//", "%", "^", "(", ")", "sqrt", "sqrt(", "e", "pi", "\u00d7", "\u00f7", "\u00b7",
          "example.com", "a.", "a-", ":80", "/path", "'", '"', "<", ">", "=", "\u00e9", "\U0001f600",
          "how many", "how", "2024-05", "_"]


@st.composite
def adversarial_text(draw: st.DrawFn) -> str:
    """A short head, a unit repeated up to the planner's length limit, and a tail that may break a match."""
    head = "".join(draw(st.lists(st.sampled_from(TOKENS), max_size=4)))
    unit = "".join(draw(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=6)))
    tail = "".join(draw(st.lists(st.sampled_from(TOKENS), max_size=3)))
    length = draw(st.integers(min_value=1, max_value=MAX_QUERY_CHARS))
    body = unit * max(1, (length - len(head) - len(tail)) // len(unit))
    return (head + body)[: MAX_QUERY_CHARS - len(tail)] + tail


@pytest.mark.timeout(600)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(adversarial_text())
def test_no_rule_hangs_on_adversarial_text_up_to_the_limit(text: str) -> None:
    assert len(text) <= MAX_QUERY_CHARS
    for rule in RULES:
        with hang_guard(f"{rule.__name__} on {text[:40]!r}… ({len(text)} characters)"):
            rule(text)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("spaces", [200, 400, 2_400, MAX_QUERY_CHARS - len("search ab")])
def test_the_redos_string_of_issue_16_is_a_plain_search(spaces: int) -> None:
    """"search a" + N spaces + "b" backtracked in cubic time (17 s for one 2,409-character request)."""
    text = "search a" + " " * spaces + "b"
    with hang_guard(f"the rules on the issue's ReDoS string with {spaces} spaces"):
        hints = route_hints(text)
    assert hints.rule is not None and hints.rule.tool == "web_search"
    assert hints.rule.arguments == {"query": "a" + " " * spaces + "b"}


@pytest.mark.parametrize(
    ("query", "q"),
    [("search ??", None), ("search for", "for"), ("search  the weather!?", "the weather"),
     ("find a\nb", None), ("google cats \n", "cats"), ("please web search the web for x ? !", "x ?")],
)
def test_search_terms_edge_cases(query: str, q: str | None) -> None:
    rule = match_search(query)
    assert (rule.arguments["query"] if rule else None) == q


def test_long_texts_are_matched_off_the_event_loop_with_the_same_result() -> None:
    text = "search " + "gRPC health " * (RULES_INLINE_CHARS // 8)
    assert len(text) > RULES_INLINE_CHARS
    hints = asyncio.run(hints_off_loop(text))
    assert hints == route_hints(text) and hints.rule is not None and not hints.note


@pytest.mark.timeout(120)
@pytest.mark.parametrize("output", ["{" * 100_000, '{"' * 50_000, "{}" * 50_000 + "x",
                                    " " * MAX_PROPOSAL_CHARS + '{"tool": null}'])
def test_proposal_parsing_is_bounded(output: str) -> None:
    with hang_guard("parse_proposal"):
        proposal = parse_proposal(output, CATALOGUE)
    assert proposal.tool is None and "no tool is needed" not in proposal.reason


# -- the task store is bounded in bytes, ListTasks pages (issue 16) -------------------------------------


def _big_query(turn_bytes: int, turns: int = 64) -> planner_pb2.Query:
    history = [common_pb2.ChatMessage(role="user" if i % 2 else "assistant", content="x" * turn_bytes)
               for i in range(turns)]
    return planner_pb2.Query(text="summarise all that", history=history)


def test_64_turns_of_240_kb_are_refused_whole() -> None:
    """The issue's attack: 20 asks of 64 turns x 240 KB grew a planner by 316 MB, then ListTasks broke."""
    from llmlab_grpc.planner.planner import MAX_QUERY_BYTES, QueryError, validate_query

    with pytest.raises(QueryError, match=f"the limit is {MAX_QUERY_BYTES}"):
        validate_query(_big_query(240 * 1024))


def test_a_stored_task_keeps_a_preview_and_the_hash_of_its_query() -> None:
    from llmlab_grpc.planner.planner import validate_query
    from llmlab_grpc.planner.tasks import MAX_TASK_BYTES, preview_query, query_digest

    store = TaskStore(max_bytes=1024 * 1024)
    query = _big_query(60 * 1024)  # 3.8 MB: under the query limit
    validate_query(query)
    for i in range(20):
        kept, cut = preview_query(query)
        store.save(planner_pb2.Task(task_id=f"t{i}", query=kept, query_sha256=query_digest(query), query_truncated=cut,
                                    answer="y" * 300_000))  # an answer over the per-task budget too
    assert len(store) == 20 and store.bytes <= 20 * MAX_TASK_BYTES
    task = store.get("t19")
    assert task is not None and task.query_truncated and task.trace_truncated
    assert task.query_sha256 == query_digest(query) and len(task.query.history) == 64
    assert task.ByteSize() <= MAX_TASK_BYTES
    small, cut = preview_query(planner_pb2.Query(text="What is 25 * 67?"))
    assert not cut and small.text == "What is 25 * 67?"


def test_the_task_store_forgets_the_oldest_beyond_its_byte_budget() -> None:
    store = TaskStore(max_bytes=50_000)
    for i in range(10):
        store.save(planner_pb2.Task(task_id=f"t{i}", answer="a" * 10_000))
    assert store.bytes <= 50_000 and [t.task_id for t in store.newest(10)] == ["t9", "t8", "t7", "t6"]


def test_list_tasks_pages_within_the_byte_budget_and_by_token() -> None:
    store = TaskStore()
    for i in range(30):
        store.save(planner_pb2.Task(task_id=f"t{i}", answer="a" * 100_000))
    seen: list[str] = []
    token = ""
    for _ in range(30):
        page, token = store.page(500, token, max_bytes=350_000)
        assert page and sum(t.ByteSize() for t in page) <= 350_000
        seen += [t.task_id for t in page]
        if not token:
            break
    assert seen == [f"t{i}" for i in reversed(range(30))]
    first, token = store.page(5)
    assert [t.task_id for t in first] == ["t29", "t28", "t27", "t26", "t25"] and token
    with pytest.raises(ValueError):
        store.page(5, "not-a-token")
