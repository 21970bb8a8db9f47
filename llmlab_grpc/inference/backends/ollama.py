"""``ollama``: a running Ollama server's HTTP API (``LLMLAB_OLLAMA_URL``).

``POST /api/chat`` with ``"stream": true`` answers one JSON object per line: pieces
of ``message.content`` while ``done`` is false, then a closing object with
``done_reason``, ``prompt_eval_count``, ``eval_count`` and any ``message.tool_calls``.
``GET /api/tags`` lists the models the server has.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from llmlab_grpc.inference.backends.http import HttpBackend
from llmlab_grpc.inference.types import Event, GenerationError, Message, ModelDescription, Params, Usage


class OllamaBackend(HttpBackend):
    kind = "ollama"

    models_path, models_field, name_field = "/api/tags", "models", "name"

    def load(self) -> ModelDescription:
        """Check the server lists the model; an unreachable server is not fatal (it may start later)."""
        try:
            names = self.listed_models(self.client, self.url)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            return ModelDescription(self.model, self.kind, loaded=False,
                                    detail={"error": self.failure(exc).message})
        present = self.model in names or f"{self.model}:latest" in names
        return ModelDescription(self.model, self.kind, loaded=present,
                                detail={} if present else {"error": f"not pulled on {self.url}"})

    def request_body(self, messages: list[Message], params: Params) -> dict[str, Any]:
        options: dict[str, Any] = {"num_predict": params.max_tokens, **params.sampling()}
        body: dict[str, Any] = {"model": self.model, "messages": [_to_ollama(m) for m in messages],
                                "stream": True, "options": options}
        if params.tools:
            body["tools"] = params.tools
        return body

    def generate(self, messages: list[Message], params: Params) -> Iterator[Event]:
        body = self.request_body(messages, params)
        pieces = 0
        calls: list[dict[str, Any]] = []  # Ollama streams tool calls in a chunk of their own, not the last
        try:
            with self.client.stream("POST", f"{self.url}/api/chat", json=body) as response:
                if response.status_code != 200:
                    yield self.status_failure(response)
                    return
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    if item.get("error"):
                        yield GenerationError("UNAVAILABLE", f"ollama backend at {self.url}: {item['error']}")
                        return
                    message = item.get("message") or {}
                    if message.get("content"):
                        pieces += 1
                        yield message["content"]
                    calls.extend(message.get("tool_calls") or [])
                    if item.get("done"):
                        yield _usage(item, calls, pieces)
                        return
        except (httpx.HTTPError, ValueError) as exc:
            yield self.failure(exc)
            return
        yield GenerationError("UNAVAILABLE", f"ollama backend at {self.url} ended the stream without done")


def _to_ollama(message: Message) -> dict[str, Any]:
    """OpenAI-style turn → Ollama's: tool call arguments are objects, not JSON strings."""
    out: dict[str, Any] = {"role": message["role"], "content": message.get("content") or ""}
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except ValueError:
                arguments = {}
        calls.append({"function": {"name": function.get("name", ""), "arguments": arguments}})
    if calls:
        out["tool_calls"] = calls
    return out


def _usage(final: dict[str, Any], tool_calls: list[dict[str, Any]], pieces: int) -> Usage:
    calls = [
        {"id": f"call_{i}", "type": "function",
         "function": {"name": (c.get("function") or {}).get("name", ""),
                      "arguments": json.dumps((c.get("function") or {}).get("arguments") or {})}}
        for i, c in enumerate(tool_calls)
    ]
    reason = "tool_calls" if calls else ("length" if final.get("done_reason") == "length" else "stop")
    return Usage(
        prompt_tokens=int(final.get("prompt_eval_count") or 0),
        completion_tokens=int(final.get("eval_count") or pieces),
        finish_reason=reason,
        tool_calls_json=json.dumps(calls) if calls else "",
    )
