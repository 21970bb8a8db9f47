"""JSON from clients, parsed with a nesting bound: a hostile document is a clear refusal, never a crash.

``json.loads`` recurses: ``[[[[...]]]]`` a few thousand levels deep raises
``RecursionError`` (which escapes ``except ValueError`` and became a plain-text 500),
and a few hundred levels that do parse then blow the stack of whatever walks the
result next (pydantic, ``json.dumps`` of a tool schema, protobuf conversion). So every
JSON document a client sends (the ``/v1`` body, a WebSocket message) goes through
``loads``, which turns both into ``JsonRefused`` (a ``ValueError``, so existing
``except ValueError`` handlers answer 400 / INVALID_ARGUMENT) and refuses anything
nested deeper than ``MAX_DEPTH``, far beyond any real request (an OpenAI tool schema
is rarely ten levels deep).
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects a client's JSON may have."""


class JsonRefused(ValueError):
    """The text is not JSON, or is nested deeper than the limit; the message says which."""


def depth_over(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests lists/dicts deeper than ``limit``; iterative, so it cannot overflow."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def loads(text: str | bytes | bytearray, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that raises ``JsonRefused`` for bad JSON and for nesting beyond ``max_depth``."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise JsonRefused(f"JSON nested deeper than {max_depth} levels is not accepted") from None
    except ValueError as exc:
        raise JsonRefused(str(exc)) from None
    if isinstance(value, (dict, list)):
        # Cheap first: a document with few brackets cannot be deep (bytes.count runs in C).
        brackets = text.count("[") + text.count("{") if isinstance(text, str) else text.count(b"[") + text.count(b"{")
        if brackets > max_depth and depth_over(value, max_depth):
            raise JsonRefused(f"JSON nested deeper than {max_depth} levels is not accepted")
    return value
