"""The calculator: exact results, refusals before work, and agreement with Python's arithmetic."""

from __future__ import annotations

import math
import operator
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmlab_grpc.tools.base import InvalidArguments
from llmlab_grpc.tools.builtin import calculator as calc
from llmlab_grpc.tools.builtin.calculator import CalculatorTool

TOOL = CalculatorTool()


async def run(expression: object) -> dict:
    outcome = await TOOL.run({"expression": expression})
    if outcome.error is not None:
        return {"error": outcome.error.code, "message": outcome.error.message}
    return outcome.result


@pytest.mark.parametrize(
    ("expression", "result", "kind"),
    [
        ("25 * 67", "1675", "integer"),
        ("2 + 3 * 4", "14", "integer"),
        ("(2 + 3) * 4", "20", "integer"),
        ("-(3 - 10)", "7", "integer"),
        ("7 // 2", "3", "integer"),
        ("-7 // 2", "-4", "integer"),
        ("-7 % 3", "2", "integer"),
        ("2 ** 10", "1024", "integer"),
        ("2 ** -3", "0.125", "decimal"),
        ("0.1 + 0.2", "0.3", "decimal"),
        ("1.5e3 * 2", "3000", "integer"),
        ("10 / 4", "2.5", "decimal"),
        ("1 / 3", "0.333333333333333333333333333333", "fraction"),
        ("sqrt(16)", "4", "integer"),
        ("sqrt(0.25)", "0.5", "decimal"),
        ("abs(-3.5)", "3.5", "decimal"),
        ("round(7 / 3)", "2", "integer"),
        ("round(2.675, 2)", "2.68", "decimal"),
        ("min(3, 1, 2)", "1", "integer"),
        ("max(3, 1.5, 2)", "3", "integer"),
        ("2 ** 100", str(2**100), "integer"),
        ("1_000 * 3", "3000", "integer"),
    ],
)
async def test_exact_results(expression: str, result: str, kind: str) -> None:
    out = await run(expression)
    assert out["result"] == result
    assert out["kind"] == kind
    assert out["exact"] is (kind != "fraction")


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("sqrt(2)", math.sqrt(2)),
        ("log(8, 2)", 3.0),
        ("log(e)", 1.0),
        ("sin(pi / 2)", 1.0),
        ("cos(0)", 1.0),
        ("2 ** 0.5", math.sqrt(2)),
        ("pi * 2", math.tau),
        ("log(10 ** 400)", 400 * math.log(10)),
    ],
)
async def test_float_functions(expression: str, expected: float) -> None:
    out = await run(expression)
    assert out["kind"] in ("float", "integer")
    assert math.isclose(out["value"], expected, rel_tol=1e-12)


async def test_json_value_only_when_it_fits() -> None:
    assert (await run("2 ** 53"))["value"] == 2**53
    big = await run("2 ** 64")
    assert big["value"] is None and big["result"] == str(2**64)
    assert (await run("1 / 3"))["fraction"] == "1/3"


async def test_numbers_given_as_json_are_expressions() -> None:
    assert (await run(42))["result"] == "42"


@pytest.mark.parametrize(
    ("expression", "code", "fragment"),
    [
        ("9**9**9**9", "REFUSED", "exponent"),
        ("10**100000000", "REFUSED", "exponent"),
        ("1/0", "FAILED", "division by zero"),
        ("5 // 0", "FAILED", "division by zero"),
        ("5 % 0", "FAILED", "division by zero"),
        ("0 ** -1", "FAILED", "division by zero"),
        ("3 ** 9000", "REFUSED", "digits"),
        ("(1/3) ** 10000", "REFUSED", "digits"),
        ("1e999999999", "REFUSED", "too large"),
        ("(-8) ** (1/3)", "FAILED", "not a real number"),
        ("sqrt(-1)", "FAILED", "not a real number"),
        ("log(0)", "FAILED", "positive"),
        ("log(5, 1)", "FAILED", "base 1"),
        ("sqrt(2) * 10 ** 400", "FAILED", "too large"),
        ("round(1.5, 1000)", "FAILED", "round"),
    ],
)
async def test_refusals_and_failures(expression: str, code: str, fragment: str) -> None:
    out = await run(expression)
    assert out["error"] == code, out
    assert fragment in out["message"]


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("__import__('os')", "unknown function '__import__'"),
        ("().__class__", "attribute access"),
        ("x + 1", "'x' is not known"),
        ("sqrt", "is a function"),
        ("'a' * 3", "only real numbers"),
        ("1j", "complex"),
        ("3 ^ 2", "use ** for powers"),
        ("1 < 2", "comparisons"),
        ("[1][0]", "indexing"),
        ("lambda: 1", "lambda"),
        ("sqrt(4, 2)", "takes 1 argument"),
        ("round(x=1)", "keyword"),
        ("(1, 2)", "tuples"),
        ("1 +", "not a valid expression"),
        ("", "empty"),
        ("1" * 1001, "at most 1000 characters"),
        ("-" * 400 + "1", "the limit is 300"),
    ],
)
async def test_bad_expressions_are_invalid_arguments(expression: str, fragment: str) -> None:
    with pytest.raises(InvalidArguments) as caught:
        await TOOL.run({"expression": expression})
    assert fragment in caught.value.message
    assert caught.value.code == "INVALID_ARGUMENT"


def test_limits_are_explicit() -> None:
    assert calc.MAX_EXPRESSION_CHARS == 1000
    assert calc.MAX_AST_NODES == 300
    assert calc.MAX_EXPONENT == 10_000
    assert calc.MAX_RESULT_DIGITS == 4000
    assert calc.MAX_EVAL_SECONDS == 0.5


def test_time_budget_is_enforced_at_every_step() -> None:
    with pytest.raises(calc.ToolFailure) as caught:
        calc.evaluate("1 + 2 + 3", budget_s=-1.0)
    assert caught.value.code == "REFUSED"
    assert "limit" in caught.value.message


def test_power_estimate_refuses_before_computing() -> None:
    # The bit-length estimate rejects 7**9999 (8450 digits) without building the number.
    with pytest.raises(calc.ToolFailure, match=r"at least [0-9]+ digits"):
        calc.evaluate("7 ** 9999")


def test_schema_is_published() -> None:
    schema = CalculatorTool.input_schema()
    assert schema["required"] == ["expression"]
    assert schema["properties"]["expression"]["maxLength"] == 1000


# --- property: agreement with Python's own arithmetic on safe inputs -------------------------

_INT_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "//": operator.floordiv, "%": operator.mod}


def _leaf() -> st.SearchStrategy[tuple[str, int]]:
    return st.integers(min_value=-1000, max_value=1000).map(lambda n: (f"({n})", n))


def _combine(children: st.SearchStrategy[tuple[str, int]]) -> st.SearchStrategy[tuple[str, int]]:
    def binary(op: str, a: tuple[str, int], b: tuple[str, int]) -> tuple[str, int]:
        if op in ("//", "%") and b[1] == 0:
            b = ("(1)", 1)
        return f"({a[0]} {op} {b[0]})", _INT_OPS[op](a[1], b[1])

    def power(a: tuple[str, int], k: int) -> tuple[str, int]:
        return f"({a[0]} ** {k})", a[1] ** k

    return st.one_of(
        st.builds(binary, st.sampled_from(sorted(_INT_OPS)), children, children),
        st.builds(power, children, st.integers(min_value=0, max_value=3)),
        children.map(lambda a: (f"(-{a[0]})", -a[1])),
    )


INT_EXPRESSIONS = st.recursive(_leaf(), _combine, max_leaves=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(INT_EXPRESSIONS)
def test_integer_arithmetic_matches_python(case: tuple[str, int]) -> None:
    text, expected = case
    if len(text) > calc.MAX_EXPRESSION_CHARS or abs(expected).bit_length() > 10_000:
        return
    value = calc.evaluate(text)
    assert value == expected
    assert calc.describe(value)["result"] == str(expected)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=-10**6, max_value=10**6),
    st.integers(min_value=-10**6, max_value=10**6).filter(lambda n: n != 0),
    st.integers(min_value=0, max_value=4),
)
def test_division_matches_python(a: int, b: int, places: int) -> None:
    # a / b is exact: the calculator's Fraction equals Python's Fraction and rounds to Python's float.
    value = calc.evaluate(f"{a} / {b}")
    assert value == Fraction(a, b)
    assert calc.describe(value)["value"] == a / b
    scaled = a / 10**places
    decimal_text = f"{scaled:.{places}f}" if places else str(a)
    assert math.isclose(float(calc.evaluate(f"{decimal_text} * 3")), scaled * 3, rel_tol=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=0.001, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_functions_match_math(x: float) -> None:
    text = repr(x)
    assert math.isclose(float(calc.evaluate(f"sqrt({text})")), math.sqrt(x), rel_tol=1e-12)
    assert math.isclose(float(calc.evaluate(f"log({text})")), math.log(x), rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(float(calc.evaluate(f"sin({text})")), math.sin(x), rel_tol=1e-9, abs_tol=1e-9)
