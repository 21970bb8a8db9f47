"""Request models of ``POST /v1/chat/completions`` and the shapes of its answers.

Requests are validated with pydantic so a wrong field is a 400 that names it. Fields
OpenAI defines but llmlab cannot honour are refused when ignoring them would change
the answer (``n`` > 1, ``logprobs``, a JSON ``response_format``, a forced
``tool_choice``, image content); fields that only tune or label a request
(``frequency_penalty``, ``presence_penalty``, ``logit_bias``, ``user``, ``metadata``,
``store``, ``parallel_tool_calls``, ...) are accepted and ignored, as docs/openai_api.md says.

Answers are plain dicts built by the functions below, in the exact shapes of
``chat.completion``, ``chat.completion.chunk`` and ``list`` of ``model``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_MESSAGES = 256
MAX_STOP = 4


class _Lenient(BaseModel):
    """Unknown keys are ignored: clients send fields newer than this server."""

    model_config = ConfigDict(extra="ignore")


class ContentPart(_Lenient):
    type: str
    text: str | None = None


class FunctionCall(_Lenient):
    name: str
    arguments: str = ""


class ToolCall(_Lenient):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self, index: int) -> str:
        """The content as one string; only text parts exist in llmlab."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        for j, part in enumerate(self.content):
            if part.type != "text":
                raise ValueError(f"messages[{index}].content[{j}] is of type {part.type!r}: "
                                 "llmlab models read text only")
        return "\n".join(part.text or "" for part in self.content)


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionDefinition


class StreamOptions(_Lenient):
    include_usage: bool = False


class LlmlabOptions(BaseModel):
    """The ``llmlab`` extension object of a request."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tools: bool = Field(True, description="let the planner answer with a mesh tool (calculator, search, browser)")
    cache_nondeterministic: bool = Field(
        False, description="cache the answer even when sampling is random (temperature > 0 without seed)")


class CacheOptions(BaseModel):
    """The ``cache`` object of a request, in LiteLLM's shape (``extra_body={"cache": {...}}``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)
    namespace: str | None = Field(None, max_length=128, description="cache namespace (part of the key)")
    ttl: float | None = Field(None, gt=0, le=30 * 86400, description="time to live of the stored answer, seconds")
    s_maxage: float | None = Field(None, alias="s-maxage", ge=0,
                                   description="accept only a cached answer at most this many seconds old")
    no_cache: bool = Field(False, alias="no-cache", description="neither look up nor store")
    no_store: bool = Field(False, alias="no-store", description="look up but do not store")
    semantic: bool | None = Field(None, description="semantic lookup and store (llmlab extension)")
    min_similarity: float | None = Field(None, gt=0, le=1, description="similarity threshold of a semantic hit")


NO_LLMLAB_OPTIONS = LlmlabOptions()
NO_CACHE_OPTIONS = CacheOptions()


class ChatCompletionRequest(_Lenient):
    model: str = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    stop: str | list[str] | None = None
    n: int | None = None
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["auto", "none"] | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    # Absent (or null) is None rather than a default object: a default_factory runs Python for
    # every request that leaves the object out, and doubled the validation of a plain request.
    # ``options()`` and ``cache_options()`` give the defaults.
    llmlab: LlmlabOptions | None = None
    cache: CacheOptions | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError("only n=1 is supported: llmlab answers with one choice; send separate requests")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if value == "" or (isinstance(value, list) and not all(value)):
            raise ValueError("stop sequences must not be empty")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, value: Any) -> Any:
        if isinstance(value, dict):
            raise ValueError("only tool_choice 'auto' or 'none' is supported: llmlab cannot force a tool call")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") != "text":
            raise ValueError("only response_format {'type': 'text'} is supported")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("logprobs are not supported")
        return value

    def options(self) -> LlmlabOptions:
        """The ``llmlab`` object, its defaults when the request has none."""
        return self.llmlab or NO_LLMLAB_OPTIONS

    def cache_options(self) -> CacheOptions:
        """The ``cache`` object, its defaults when the request has none."""
        return self.cache or NO_CACHE_OPTIONS

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def token_limit(self) -> int | None:
        """``max_completion_tokens`` (the current name) wins over the deprecated ``max_tokens``."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def function_tools(self) -> list[dict[str, Any]]:
        if not self.tools or self.tool_choice == "none":
            return []
        return [t.model_dump(exclude_none=True) for t in self.tools]


# --- answers ---------------------------------------------------------------------------


def completion(completion_id: str, created: int, model: str, message: dict[str, Any], finish_reason: str,
               usage: dict[str, int], extension: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": completion_id, "object": "chat.completion", "created": created, "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage,
        "llmlab": extension,
    }


def chunk(completion_id: str, created: int, model: str, delta: dict[str, Any] | None,
          finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``delta=None`` makes the usage-only chunk (no choices)."""
    choices = [] if delta is None else [
        {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
    return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None, "choices": choices, **extra}


def model_entry(name: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "llmlab", "llmlab": {"nodes": nodes}}
