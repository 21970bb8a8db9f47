"""Plain values that cross the Ray boundary: request parameters, stream events, errors.

They are dataclasses of builtins (never protos, never exceptions with custom
constructors) so Ray pickles them cheaply and identically in the node and in the
actor's worker process. A backend *yields* a ``GenerationError`` instead of raising,
so the status code a client sees is decided by the backend that knows what went
wrong, not guessed from a wrapped Ray exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]
"""One chat turn: ``{"role", "content"}`` plus optional ``tool_call_id`` / ``tool_calls``."""


@dataclass(frozen=True)
class Params:
    """Generation parameters after validation; ``None`` means "the backend's default"."""

    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    tools: list[dict[str, Any]] | None = None

    def sampling(self) -> dict[str, Any]:
        """The sampling options that are set (``temperature``, ``top_p``, ``seed``, ``stop``), by the
        names llama.cpp, Ollama and the OpenAI API share: a backend sends only these, so its own
        defaults hold for the rest."""
        options: dict[str, Any] = {}
        if self.temperature is not None:
            options["temperature"] = self.temperature
        if self.top_p is not None:
            options["top_p"] = self.top_p
        if self.seed is not None:
            options["seed"] = self.seed
        if self.stop:
            options["stop"] = list(self.stop)
        return options


@dataclass(frozen=True)
class Usage:
    """The closing event of every successful generation."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop", "length" or "tool_calls"
    tool_calls_json: str = ""


@dataclass(frozen=True)
class GenerationError:
    """A failure the backend understood; ``code`` is a ``grpc.StatusCode`` name, e.g. "UNAVAILABLE"."""

    code: str
    message: str


@dataclass(frozen=True)
class ModelDescription:
    """What an actor reports about its model once loaded."""

    name: str
    backend: str
    context_length: int = 0
    loaded: bool = True
    detail: dict[str, Any] = field(default_factory=dict)


Event = str | Usage | GenerationError
"""What a backend's generator yields: text pieces, then exactly one Usage or GenerationError."""
