"""``openai``: any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio, …).

``POST /v1/chat/completions`` with ``"stream": true`` answers Server-Sent Events:
``data: {chunk}`` lines whose ``choices[0].delta`` carries text or pieces of
``tool_calls`` (assembled here by ``index``), then ``data: [DONE]``. Usage comes in a
last chunk when the server honours ``stream_options.include_usage``; otherwise the
prompt count is 0 and the completion count is the number of text chunks.
``GET /v1/models`` lists the models.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from llmlab_grpc.inference.backends.http import HttpBackend
from llmlab_grpc.inference.types import Event, GenerationError, Message, ModelDescription, Params, Usage


class OpenAIBackend(HttpBackend):
    kind = "openai"

    @classmethod
    def base_url(cls, url: str) -> str:
        """Accept the server root or its ``/v1``: both mean ``…/v1``."""
        url = url.rstrip("/")
        return url if url.endswith("/v1") else f"{url}/v1"

    models_path, models_field, name_field = "/models", "data", "id"

    def load(self) -> ModelDescription:
        try:
            models = self.listed_models(self.client, self.url)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            return ModelDescription(self.model, self.kind, loaded=False, detail={"error": self.failure(exc).message})
        entry = models.get(self.model)
        if entry is None:
            return ModelDescription(self.model, self.kind, loaded=False, detail={"error": f"not listed by {self.url}"})
        context = entry.get("max_model_len") or entry.get("context_length") or 0  # vLLM / LM Studio extras
        return ModelDescription(self.model, self.kind, context_length=int(context), loaded=True)

    def request_body(self, messages: list[Message], params: Params) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [_to_openai(m) for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_tokens,
            **params.sampling(),
        }
        if params.tools:
            body["tools"] = params.tools
        return body

    def generate(self, messages: list[Message], params: Params) -> Iterator[Event]:
        body = self.request_body(messages, params)
        calls: dict[int, dict[str, Any]] = {}
        finish = ""
        usage: dict[str, Any] = {}
        pieces = 0
        done = False
        try:
            with self.client.stream("POST", f"{self.url}/chat/completions", json=body) as response:
                if response.status_code != 200:
                    yield self.status_failure(response)
                    return
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, comments (": keep-alive"), event names
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    chunk = json.loads(data)
                    if chunk.get("error"):
                        error = chunk["error"]
                        said = error.get("message") if isinstance(error, dict) else error
                        yield GenerationError("UNAVAILABLE", f"openai backend at {self.url}: {said}")
                        return
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            pieces += 1
                            yield delta["content"]
                        for piece in delta.get("tool_calls") or []:
                            _merge_call(calls, piece)
                        finish = choice.get("finish_reason") or finish
        except (httpx.HTTPError, ValueError) as exc:
            yield self.failure(exc)
            return
        if not done and not finish:
            yield GenerationError("UNAVAILABLE", f"openai backend at {self.url} ended the stream before [DONE]")
            return
        assembled = [calls[i] for i in sorted(calls)]
        if assembled:
            finish = "tool_calls"
        yield Usage(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or pieces),
            finish_reason="length" if finish == "length" else (finish if finish == "tool_calls" else "stop"),
            tool_calls_json=json.dumps(assembled) if assembled else "",
        )


def _to_openai(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message["role"], "content": message.get("content") or ""}
    if message.get("tool_call_id"):
        out["tool_call_id"] = message["tool_call_id"]
    if message.get("tool_calls"):
        out["tool_calls"] = message["tool_calls"]
    return out


def _merge_call(calls: dict[int, dict[str, Any]], piece: dict[str, Any]) -> None:
    """Streamed tool calls arrive in pieces keyed by ``index``; names and arguments concatenate."""
    index = int(piece.get("index", len(calls)))
    call = calls.setdefault(index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
    if piece.get("id"):
        call["id"] = piece["id"]
    function = piece.get("function") or {}
    call["function"]["name"] += function.get("name") or ""
    call["function"]["arguments"] += function.get("arguments") or ""
