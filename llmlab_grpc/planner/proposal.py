"""An LLM-proposed tool call: show the model the tools' JSON Schemas, validate what it says.

The model must answer with one JSON object ``{"tool": NAME, "arguments": {...}}`` or
``{"tool": null}``. Anything else (prose, broken JSON, an unknown tool, arguments
that fail the tool's schema) is rejected with a reason, and the planner falls back
to plain generation, recording that reason in the trace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jsonschema
from pydantic import BaseModel, ValidationError

MAX_PROPOSAL_TOKENS = 96
MAX_PROPOSAL_CHARS = 8_192
"""Model output looked at for a tool call: 96 tokens fit many times over; a backend that ignores
max_tokens cannot make the parse (which runs on the planner's event loop) long."""
MAX_JSON_STARTS = 8
"""Opening braces tried as the start of the call: each try scans to the end of the text, so this
keeps the search linear (``{{{{…`` with no closing brace would be quadratic)."""


class ProposedCall(BaseModel):
    """The shape the model must produce."""

    tool: str | None
    arguments: dict[str, Any] = {}


@dataclass
class Proposal:
    """Outcome of asking the model: a validated call, or why there is none."""

    tool: str | None
    arguments: dict[str, Any]
    reason: str


def proposal_messages(query: str, tools: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """Chat messages asking for a tool call, tools given as name → {description, input_schema}."""
    catalogue = "\n".join(
        f"- {name}: {spec.get('description', '')} input schema: {json.dumps(spec.get('input_schema', {}))}"
        for name, spec in sorted(tools.items())
    )
    system = (
        "You decide whether a tool is needed to answer the user. Tools:\n"
        f"{catalogue}\n"
        'Answer with exactly one JSON object and nothing else: {"tool": "<name>", "arguments": {...}} '
        'to call a tool, or {"tool": null} when no tool is needed.'
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": query}]


def _first_json_object(text: str) -> str | None:
    start = text.find("{")
    for _ in range(MAX_JSON_STARTS):
        if start == -1:
            break
        depth = 0
        in_string = False
        escaped = False
        for i in range(start, len(text)):
            ch = text[i]
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[start: i + 1]
        start = text.find("{", start + 1)
    return None


def parse_proposal(output: str, tools: dict[str, dict[str, Any]]) -> Proposal:
    """Validate the model's output against the protocol and the chosen tool's schema.

    Only the first ``MAX_PROPOSAL_CHARS`` characters count: the call is the model's whole answer.
    """
    raw = _first_json_object(output[:MAX_PROPOSAL_CHARS])
    if raw is None:
        return Proposal(None, {}, f"model proposed no JSON tool call ({output.strip()[:80]!r})")
    try:
        call = ProposedCall.model_validate_json(raw)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"] if exc.errors() else str(exc)
        return Proposal(None, {}, f"model's tool call is invalid JSON or has the wrong shape: {problem}")
    if call.tool is None:
        return Proposal(None, {}, "model said no tool is needed")
    if call.tool not in tools:
        return Proposal(None, {}, f"model proposed unknown tool {call.tool!r}")
    try:
        jsonschema.validate(call.arguments, tools[call.tool].get("input_schema", {}))
    except jsonschema.ValidationError as exc:
        return Proposal(None, {}, f"model's arguments for {call.tool} fail its schema: {exc.message}")
    return Proposal(call.tool, call.arguments, f"model proposed {call.tool} with validated arguments")
