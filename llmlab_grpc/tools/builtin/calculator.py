"""``calculator``: exact arithmetic on a parsed expression, never ``eval``.

The expression is parsed with ``ast`` and only numbers, ``+ - * / // % **``, unary
signs, parentheses, a few functions and the constants ``pi`` and ``e`` are accepted;
anything else (names, attributes, calls of other functions, strings) is refused while
validating the arguments, so a bad expression is an INVALID_ARGUMENT before any work.

Numbers are exact where they can be: integers and decimal literals become
``fractions.Fraction`` (so ``0.1 + 0.2`` is exactly ``0.3``), and only the functions
and constants that are irrational by nature (``sqrt`` of a non-square, ``log``,
``sin``, ``cos``, ``pi``, ``e``, fractional powers) produce floats.

The work is bounded before it is done: a power's result size is estimated from bit
lengths, so ``9**9**9**9`` or ``10**100000000`` is refused in microseconds instead of
exhausting memory; every other operation works on values already within the digit
limit (so it is cheap) and its result is checked against the limit. The limits are the
``MAX_*`` constants below (documented in docs/tools.md).
"""

from __future__ import annotations

import ast
import math
import operator
import time
from collections.abc import Callable
from decimal import Context, Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Literal, cast

from pydantic import BaseModel, Field, field_validator

from llmlab_grpc.tools.base import Tool, ToolFailure

MAX_EXPRESSION_CHARS = 1000
"""Longest expression accepted."""
MAX_AST_NODES = 300
"""Most numbers, operators, names and calls in one expression."""
MAX_EXPONENT = 10_000
"""Largest absolute value of an exponent (for bases other than 0, 1 and -1)."""
MAX_RESULT_DIGITS = 4000
"""Most decimal digits of any exact intermediate or final value (numerator or denominator)."""
MAX_EVAL_SECONDS = 0.5
"""Wall-clock budget of one evaluation; checked at every step."""
APPROX_DIGITS = 30
"""Significant digits shown for a value that has no finite decimal expansion."""
MAX_ROUND_DIGITS = 100
"""Largest ``ndigits`` accepted by ``round``."""

_MAX_RESULT_BITS = math.ceil(MAX_RESULT_DIGITS / math.log10(2))
_JSON_SAFE_INT = 2**53

Number = Fraction | float

_BINARY: dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.FloorDiv: ("//", operator.floordiv),
    ast.Mod: ("%", operator.mod),
    ast.Pow: ("**", operator.pow),
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {ast.USub: lambda x: -x, ast.UAdd: lambda x: +x}
_FUNCTIONS: dict[str, tuple[int, int | None]] = {  # name: (min args, max args or None)
    "abs": (1, 1),
    "cos": (1, 1),
    "log": (1, 2),
    "max": (1, None),
    "min": (1, None),
    "round": (1, 2),
    "sin": (1, 1),
    "sqrt": (1, 1),
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}
_HINTS: dict[type[ast.AST], str] = {
    ast.BitXor: "'^' is not supported; use ** for powers",
    ast.BitAnd: "'&' is not supported",
    ast.BitOr: "'|' is not supported",
    ast.LShift: "'<<' is not supported",
    ast.RShift: "'>>' is not supported",
    ast.MatMult: "'@' is not supported",
    ast.Invert: "'~' is not supported",
    ast.Not: "'not' is not supported",
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "indexing is not allowed",
    ast.Compare: "comparisons are not supported",
    ast.BoolOp: "'and'/'or' are not supported",
    ast.Lambda: "lambda is not allowed",
    ast.Tuple: "tuples are not allowed",
    ast.List: "lists are not allowed",
}


def _allowed_summary() -> str:
    return f"numbers, + - * / // % **, parentheses, {', '.join(sorted(_FUNCTIONS))}, pi, e"


def parse_expression(text: str) -> ast.Expression:
    """Parse and check the shape of ``text``; raise ``ValueError`` with a person-readable reason."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression is {len(text)} characters; the limit is {MAX_EXPRESSION_CHARS}")
    text = text.strip()
    if not text:
        raise ValueError("expression is empty")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not a valid expression: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ValueError("expression is nested too deeply") from None
    count = sum(1 for node in ast.walk(tree) if isinstance(node, ast.expr))
    if count > MAX_AST_NODES:  # checked before recursing, which bounds the recursion depth
        raise ValueError(f"expression has {count} parts; the limit is {MAX_AST_NODES}")
    _check(tree.body, text)
    return tree


def _check(node: ast.expr, text: str) -> None:
    """Accept only the grammar the evaluator knows; name the first thing that is not."""

    def where() -> str:
        segment = ast.get_source_segment(text, node)
        return f" ({segment!r})" if segment else ""

    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise ValueError(f"{_HINTS.get(type(node.op), 'this operator is not supported')}{where()}")
        _check(node.left, text)
        _check(node.right, text)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise ValueError(f"{_HINTS.get(type(node.op), 'this operator is not supported')}{where()}")
        _check(node.operand, text)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            kind = "complex numbers" if isinstance(node.value, complex) else type(node.value).__name__
            raise ValueError(f"only real numbers are allowed, not {kind}{where()}")
    elif isinstance(node, ast.Name):
        if node.id not in _CONSTANTS:
            what = "is a function: call it, e.g. sqrt(2)" if node.id in _FUNCTIONS else "is not known"
            raise ValueError(f"name {node.id!r} {what}; allowed: {_allowed_summary()}")
    elif isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in _FUNCTIONS:
            shown = name or ast.get_source_segment(text, node.func) or "?"
            raise ValueError(f"unknown function {shown!r}; allowed functions: {', '.join(sorted(_FUNCTIONS))}")
        if node.keywords:
            raise ValueError(f"{name}() takes no keyword arguments")
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise ValueError(f"{name}() takes no *arguments")
        low, high = _FUNCTIONS[name]
        if len(node.args) < low or (high is not None and len(node.args) > high):
            want = str(low) if low == high else f"{low} or more" if high is None else f"{low} to {high}"
            raise ValueError(f"{name}() takes {want} argument(s), got {len(node.args)}")
        for arg in node.args:
            _check(arg, text)
    else:
        hint = _HINTS.get(type(node))
        if hint is not None:
            raise ValueError(f"{hint}{where()}")
        raise ValueError(f"{type(node).__name__} is not allowed{where()}; allowed: {_allowed_summary()}")


class _Refused(ToolFailure):
    def __init__(self, message: str) -> None:
        super().__init__("REFUSED", message)


class _Failed(ToolFailure):
    def __init__(self, message: str) -> None:
        super().__init__("FAILED", message)


class _Evaluator:
    """Walks a checked tree. Every value is a Fraction (exact) or a finite float."""

    def __init__(self, text: str, budget_s: float = MAX_EVAL_SECONDS) -> None:
        self.text = text
        self.deadline = time.monotonic() + budget_s
        self.budget_s = budget_s

    def eval(self, node: ast.AST) -> Number:
        if time.monotonic() > self.deadline:
            raise _Refused(f"evaluation took longer than its {self.budget_s:g} s limit")
        if isinstance(node, ast.Expression):
            return self.eval(node.body)
        if isinstance(node, ast.Constant):
            return self._literal(node)
        if isinstance(node, ast.Name):
            return _CONSTANTS[node.id]
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self.eval(node.operand))
        if isinstance(node, ast.BinOp):
            left, right = self.eval(node.left), self.eval(node.right)
            return _binary(type(node.op), left, right)
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            return _call(node.func.id, [self.eval(arg) for arg in node.args])
        raise _Failed(f"cannot evaluate {type(node).__name__}")  # unreachable after parse_expression

    def _literal(self, node: ast.Constant) -> Fraction:
        if isinstance(node.value, int):
            return _exact(Fraction(node.value))
        source = (ast.get_source_segment(self.text, node) or repr(node.value)).replace("_", "")
        try:
            dec = Decimal(source)
        except InvalidOperation:
            dec = Decimal(repr(node.value))
        if not dec.is_finite() or abs(dec.adjusted()) > MAX_RESULT_DIGITS:
            raise _Refused(f"number {source} is too large or too small (limit {MAX_RESULT_DIGITS} digits)")
        return _exact(Fraction(dec))


def _exact(value: Fraction) -> Fraction:
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > _MAX_RESULT_BITS:
        raise _Refused(f"a value would have more than {MAX_RESULT_DIGITS} digits (the limit)")
    return value


def _float(value: Number) -> float:
    try:
        result = float(value)
    except OverflowError:
        raise _Failed("a value is too large for floating point (needed by a function or a fractional power)") from None
    return result


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise _Failed("floating-point overflow: the result is too large")
    return value


def _binary(op: type[ast.operator], left: Number, right: Number) -> Number:
    symbol, fn = _BINARY[op]
    if op is ast.Pow:
        return _power(left, right)
    try:
        if isinstance(left, float) or isinstance(right, float):
            return _finite(fn(_float(left), _float(right)))
        result = fn(left, right)
    except ZeroDivisionError:
        raise _Failed(f"division by zero (in '{symbol}')") from None
    except OverflowError:
        raise _Failed("floating-point overflow: the result is too large") from None
    return _exact(Fraction(result))


def _power(base: Number, exponent: Number) -> Number:
    if isinstance(exponent, Fraction) and exponent.denominator == 1:
        n = exponent.numerator
        if isinstance(base, Fraction):
            if base == 0 and n < 0:
                raise _Failed("division by zero (0 to a negative power)")
            if base in (0, 1, -1):
                return Fraction(1) if n == 0 else base if base != -1 else Fraction(1 if n % 2 == 0 else -1)
            if abs(n) > MAX_EXPONENT:
                raise _Refused(f"exponent {_short(n)} is larger than the limit of {MAX_EXPONENT}")
            bits = max(base.numerator.bit_length(), base.denominator.bit_length())
            # |p|**n has at least (bits - 1) * n + 1 bits: refuse before computing anything.
            if (bits - 1) * abs(n) > _MAX_RESULT_BITS:
                digits = int((bits - 1) * abs(n) * math.log10(2))
                raise _Refused(f"the result would have at least {digits} digits; the limit is {MAX_RESULT_DIGITS}")
            return _exact(base**n)
        if abs(n) > MAX_EXPONENT:
            raise _Refused(f"exponent {_short(n)} is larger than the limit of {MAX_EXPONENT}")
    fbase, fexp = _float(base), _float(exponent)
    if abs(fexp) > MAX_EXPONENT:
        raise _Refused(f"exponent {fexp:g} is larger than the limit of {MAX_EXPONENT}")
    if fbase < 0 and not fexp.is_integer():
        raise _Failed("a negative number to a fractional power is not a real number")
    if fbase == 0 and fexp < 0:
        raise _Failed("division by zero (0 to a negative power)")
    try:
        return _finite(math.pow(fbase, fexp))
    except OverflowError:
        raise _Failed("floating-point overflow: the result is too large") from None


def _short(n: int) -> str:
    if n.bit_length() < 64:
        return str(n)
    return f"with about {int(n.bit_length() * math.log10(2))} digits"


def _ln(x: Number) -> float:
    if x <= 0:
        raise _Failed("log is only defined for positive numbers")
    if isinstance(x, Fraction):
        try:
            as_float = float(x)
        except OverflowError:
            as_float = 0.0
        if as_float > 0 and math.isfinite(as_float):
            return math.log(as_float)
        return math.log(x.numerator) - math.log(x.denominator)  # ints of any size, beyond float range
    return math.log(x)


def _call(name: str, args: list[Number]) -> Number:
    if name == "abs":
        return cast(Number, abs(args[0]))  # abs of the union is typed object; it keeps the type at run time
    if name in ("min", "max"):
        return (min if name == "min" else max)(args)
    if name == "sqrt":
        x = args[0]
        if x < 0:
            raise _Failed("sqrt of a negative number is not a real number")
        if isinstance(x, Fraction):
            p, q = math.isqrt(x.numerator), math.isqrt(x.denominator)
            if p * p == x.numerator and q * q == x.denominator:
                return Fraction(p, q)
        return _finite(math.sqrt(_float(x)))
    if name in ("sin", "cos"):
        return _finite((math.sin if name == "sin" else math.cos)(_float(args[0])))
    if name == "log":
        value = _ln(args[0])
        if len(args) == 2:
            base = _ln(args[1])
            if base == 0:
                raise _Failed("log base 1 is undefined")
            value /= base
        return _finite(value)
    if name == "round":
        x = args[0]
        if len(args) == 1:
            return Fraction(round(x))
        nd = args[1]
        if not (isinstance(nd, Fraction) and nd.denominator == 1) or abs(nd) > MAX_ROUND_DIGITS:
            raise _Failed(f"round()'s second argument must be an integer between -{MAX_ROUND_DIGITS} and "
                          f"{MAX_ROUND_DIGITS}")
        if isinstance(x, float):
            return _finite(round(x, int(nd)))
        return _exact(round(x, int(nd)))
    raise _Failed(f"unknown function {name}")  # unreachable after parse_expression


def evaluate(text: str, budget_s: float = MAX_EVAL_SECONDS) -> Number:
    """Parse, check and evaluate ``text``. Raises ``ValueError`` (bad expression) or ``ToolFailure``."""
    tree = parse_expression(text)
    return _Evaluator(text.strip(), budget_s).eval(tree)


def _digits(n: int) -> int:
    return len(str(abs(n))) if n.bit_length() < 13_000 else int(n.bit_length() * math.log10(2)) + 1


def describe(value: Number) -> dict[str, Any]:
    """The output fields for a value: an exact string when there is one, a JSON number when it fits."""
    if isinstance(value, float):
        return {"result": repr(value), "value": value, "exact": False, "kind": "float", "fraction": None}
    num, den = value.numerator, value.denominator
    if den == 1:
        fits = abs(num) <= _JSON_SAFE_INT
        return {"result": str(num), "value": num if fits else None, "exact": True, "kind": "integer",
                "fraction": None}
    try:
        approx: float | None = float(value)
    except OverflowError:
        approx = None
    twos, fives, rest = 0, 0, den
    while rest % 2 == 0:
        rest //= 2
        twos += 1
    while rest % 5 == 0:
        rest //= 5
        fives += 1
    places = max(twos, fives)
    if rest == 1 and _digits(num) + places - _digits(den) + 2 <= MAX_RESULT_DIGITS:
        scaled = abs(num) * 10**places // den
        digits = str(scaled).rjust(places + 1, "0")
        text = f"{'-' if num < 0 else ''}{digits[:-places]}.{digits[-places:]}"
        return {"result": text, "value": approx, "exact": True, "kind": "decimal", "fraction": None}
    shown = Context(prec=APPROX_DIGITS).divide(Decimal(num), Decimal(den))
    return {"result": str(shown), "value": approx, "exact": False, "kind": "fraction",
            "fraction": f"{num}/{den}"}


class CalculatorInput(BaseModel):
    """Arguments of ``calculator``."""

    expression: str = Field(
        description=f"Arithmetic expression, e.g. '25 * 67' or 'sqrt(2) / 3'. Allowed: {_allowed_summary()}.",
        max_length=MAX_EXPRESSION_CHARS,
    )

    @field_validator("expression", mode="before")
    @classmethod
    def _numbers_are_expressions(cls, value: Any) -> Any:
        # `--arg expression=42` arrives as a JSON number; it is still a valid expression.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return repr(value)
        return value

    @field_validator("expression")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_expression(value)
        return value


class CalculatorOutput(BaseModel):
    """What ``calculator`` returns."""

    expression: str
    result: str = Field(description="The value as text: exact for integers and finite decimals, "
                                    f"else rounded to {APPROX_DIGITS} significant digits")
    value: float | int | None = Field(description="The value as a JSON number; null when it does not fit one")
    exact: bool = Field(description="Whether `result` is exact")
    kind: Literal["integer", "decimal", "fraction", "float"]
    fraction: str | None = Field(description="numerator/denominator when the exact value has no finite decimal")


class CalculatorTool(Tool):
    """Exact, bounded arithmetic: the answer small models get wrong."""

    name = "calculator"
    description = (
        "Evaluate an arithmetic expression exactly: + - * / // % ** and parentheses over integers and "
        "decimals, the functions sqrt, log, sin, cos, abs, round, min, max and the constants pi and e."
    )
    capabilities = ("math", "arithmetic")
    input_model = CalculatorInput
    output_model = CalculatorOutput
    timeout_s = 2.0

    async def execute(self, **kwargs: Any) -> dict[str, Any]:
        expression = kwargs["expression"]
        try:
            value = evaluate(expression)
        except ValueError as exc:  # only reachable when execute is called without validation
            raise ToolFailure("INVALID_ARGUMENT", str(exc)) from None
        except RecursionError:
            raise _Refused("expression is nested too deeply") from None
        return {"expression": expression.strip(), **describe(value)}
