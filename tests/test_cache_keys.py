"""Cache keys: equal calls share a key, any generation-affecting change makes another."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmlab_grpc.cache.keys import (
    InvalidParams,
    cache_key,
    canonical_json,
    is_deterministic,
    is_key,
    normalize_params,
    params_to_proto,
)
from llmlab_grpc.proto.llmlab.v1 import common_pb2

FULL = {
    "temperature": 0.7,
    "top_p": 0.9,
    "max_tokens": 128,
    "seed": 42,
    "system_prompt": "You are terse.",
    "stop": ["\n\n", "###"],
    "tools_json": '[{"type": "function", "function": {"name": "calculator"}}]',
}


def test_key_is_sha256_of_canonical_json() -> None:
    text = canonical_json("Tell me a joke", "smollm2", {"temperature": 0})
    assert text == '{"model":"smollm2","params":{"temperature":0.0},"prompt":"Tell me a joke"}'
    assert cache_key("Tell me a joke", "smollm2", {"temperature": 0}) == hashlib.sha256(text.encode()).hexdigest()
    assert is_key(cache_key("p", "m"))


def test_non_ascii_is_kept_verbatim() -> None:
    assert "héllo ✓" in canonical_json("héllo ✓", "m")


@given(st.permutations(list(FULL.items())))
def test_param_order_does_not_change_the_key(items: list[tuple[str, object]]) -> None:
    assert cache_key("p", "m", dict(items)) == cache_key("p", "m", FULL)


def test_proto_and_dict_give_the_same_key() -> None:
    proto = common_pb2.GenerationParams(**{**FULL, "stop": list(FULL["stop"])})
    assert cache_key("p", "m", proto) == cache_key("p", "m", FULL)


@pytest.mark.parametrize(
    ("name", "other"),
    [
        ("temperature", 0.8),
        ("top_p", 0.95),
        ("max_tokens", 129),
        ("seed", 43),
        ("system_prompt", "You are chatty."),
        ("stop", ["\n\n"]),
        ("tools_json", "[]"),
    ],
)
def test_every_generation_affecting_change_makes_another_key(name: str, other: object) -> None:
    assert cache_key("p", "m", {**FULL, name: other}) != cache_key("p", "m", FULL)


def test_prompt_model_and_unset_vs_set_change_the_key() -> None:
    base = cache_key("p", "m", FULL)
    assert cache_key("p2", "m", FULL) != base
    assert cache_key("p", "m2", FULL) != base
    for name in FULL:
        assert cache_key("p", "m", {k: v for k, v in FULL.items() if k != name}) != base, name


def test_non_affecting_fields_and_empty_values_are_ignored() -> None:
    assert cache_key("p", "m", {**FULL, "stream": True, "timeout_s": 3, "node": "a"}) == cache_key("p", "m", FULL)
    assert cache_key("p", "m", {"system_prompt": "", "stop": [], "seed": None}) == cache_key("p", "m")
    assert cache_key("p", "m", common_pb2.GenerationParams()) == cache_key("p", "m", None) == cache_key("p", "m", {})


def test_equal_values_in_other_spellings_share_a_key() -> None:
    assert cache_key("p", "m", {"temperature": "0.2", "max_tokens": "10"}) == cache_key(
        "p", "m", {"temperature": 0.2, "max_tokens": 10})
    assert cache_key("p", "m", {"temperature": 0}) == cache_key("p", "m", {"temperature": 0.0})
    assert cache_key("p", "m", {"stop": ["b", "a", "a"]}) == cache_key("p", "m", {"stop": ["a", "b"]})
    assert cache_key("p", "m", {"stop": "a"}) == cache_key("p", "m", {"stop": ["a"]})
    compact = json.dumps(json.loads(FULL["tools_json"]), separators=(",", ":"))  # type: ignore[arg-type]
    assert cache_key("p", "m", {"tools_json": compact}) == cache_key("p", "m", {"tools_json": FULL["tools_json"]})


def test_proto_float32_temperature_matches_the_decimal() -> None:
    proto = common_pb2.GenerationParams(temperature=0.7)
    assert proto.temperature != 0.7  # float32 in the proto
    assert normalize_params(proto) == {"temperature": 0.7}


@pytest.mark.parametrize("params", [{"temperature": "hot"}, {"max_tokens": 1.5}, {"seed": True},
                                    {"temperature": float("nan")}, {"system_prompt": 3}, {"stop": [1]}])
def test_unusable_values_are_refused(params: dict[str, object]) -> None:
    with pytest.raises(InvalidParams):
        cache_key("p", "m", params)


def test_params_to_proto_round_trips() -> None:
    proto = params_to_proto(FULL)
    assert normalize_params(proto) == normalize_params(FULL)
    assert not params_to_proto({}).HasField("temperature")


def test_is_deterministic() -> None:
    assert is_deterministic({"temperature": 0})
    assert is_deterministic({"temperature": 0.9, "seed": 1})
    assert is_deterministic(common_pb2.GenerationParams(temperature=0.0))
    assert not is_deterministic({"temperature": 0.9})
    assert not is_deterministic(None)  # the backend default samples


def test_is_deterministic_never_raises_on_bad_params() -> None:
    """The planner asks this of every model step: an invalid call is simply not cacheable."""
    assert not is_deterministic(common_pb2.GenerationParams(temperature=float("nan")))
    assert not is_deterministic({"temperature": "hot"})
    assert not is_deterministic({"seed": "abc"})
    assert is_deterministic({"temperature": 1e-9})  # rounds to 0, as in the key


def test_remembered_proto_keys_equal_computed_ones_and_refusals_repeat() -> None:
    """Keys of proto params are remembered (the gRPC hit path); a long prompt is not, and both agree."""
    proto = params_to_proto(FULL)
    for prompt in ("short", "long " * 1000):
        first = cache_key(prompt, "m", proto, "team")
        assert first == cache_key(prompt, "m", proto, "team") == cache_key(prompt, "m", FULL, "team")
    proto.temperature = float("nan")
    for _ in range(2):  # a refused request is refused again, never remembered
        with pytest.raises(InvalidParams):
            cache_key("short", "m", proto)
    with pytest.raises(InvalidParams):
        cache_key("short", "m", common_pb2.GenerationParams(), "bad namespace!")
