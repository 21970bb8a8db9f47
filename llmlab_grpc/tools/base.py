"""The ``Tool`` abstract base: schema'd input, bounded time, structured failure.

A tool declares a pydantic input model (its JSON Schema is what ``ListTools``
publishes and what the model is shown), an output model, and ``execute``. Callers
never call ``execute`` directly: ``Tool.run`` validates, enforces the timeout and
turns every failure into a ``ToolFailure`` with a code, so no tool bug can take a
server down or leak a traceback to a client.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from llmlab_grpc.tools.builtin.url_guard import MeshPorts


class ToolFailure(Exception):
    """A structured tool error. ``code`` is one of the ToolError codes in common.proto."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidArguments(ToolFailure):
    """The arguments do not match the tool's input schema (gRPC: INVALID_ARGUMENT)."""

    def __init__(self, message: str) -> None:
        super().__init__("INVALID_ARGUMENT", message)


@dataclass
class ToolOutcome:
    """What one run produced: a result dict or an error, with timing and attachments."""

    result: dict[str, Any] = field(default_factory=dict)
    error: ToolFailure | None = None
    duration_ms: float = 0.0
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)  # (name, mime, data)

    @property
    def ok(self) -> bool:
        return self.error is None


def describe_validation_error(exc: ValidationError) -> str:
    """``field: problem; field: problem`` — short and actionable."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


class Tool(ABC):
    """Base class of every tool. Subclasses set the class attributes and implement ``execute``."""

    name: ClassVar[str]
    description: ClassVar[str]
    capabilities: ClassVar[tuple[str, ...]] = ()
    input_model: ClassVar[type[BaseModel]]
    output_model: ClassVar[type[BaseModel]]
    timeout_s: float = 10.0
    """Longest one execution may take; a class default an instance may raise (web_search: its backend's retries)."""

    @abstractmethod
    async def execute(self, **kwargs: Any) -> dict[str, Any]:
        """Do the work with validated arguments; return a dict matching ``output_model``.

        Raise ``ToolFailure`` for expected failures. A tool may put binary outputs in
        ``self.attachments_of(result)`` by returning them under the key ``_attachments``
        as a list of ``(name, mime_type, bytes)``.
        """

    def protect_mesh(self, mesh: MeshPorts) -> None:
        """Called by the node before ``start``: a tool that dials URLs refuses the mesh's own ports.

        The default does nothing (a tool that makes no connections of its own choosing).
        """
        return None

    async def start(self) -> None:
        """Acquire long-lived resources (a browser); called once when the node starts."""
        return None

    async def close(self) -> None:
        """Release them; called once when the node stops."""
        return None

    @classmethod
    def input_schema(cls) -> dict[str, Any]:
        return cls.input_model.model_json_schema()

    @classmethod
    def output_schema(cls) -> dict[str, Any]:
        return cls.output_model.model_json_schema()

    def validate(self, arguments: dict[str, Any]) -> BaseModel:
        try:
            return self.input_model.model_validate(arguments)
        except ValidationError as exc:
            raise InvalidArguments(f"{self.name}: {describe_validation_error(exc)}") from exc

    async def run(self, arguments: dict[str, Any]) -> ToolOutcome:
        """Validate, execute within ``timeout_s``, and capture any failure as a ToolOutcome.

        Raises ``InvalidArguments`` (the caller maps it to INVALID_ARGUMENT); every other
        problem comes back inside the outcome.
        """
        params = self.validate(arguments)
        started = time.perf_counter()
        outcome = ToolOutcome()
        try:
            result = await asyncio.wait_for(self.execute(**params.model_dump()), timeout=self.timeout_s)
            outcome.attachments = list(result.pop("_attachments", []))
            outcome.result = result
        except TimeoutError:
            outcome.error = ToolFailure("TIMEOUT", f"{self.name} took longer than its {self.timeout_s:g} s limit")
        except InvalidArguments:
            raise
        except ToolFailure as exc:
            outcome.error = exc
        except Exception as exc:  # a tool bug is the caller's error result, never a crash
            outcome.error = ToolFailure("FAILED", f"{self.name} failed: {type(exc).__name__}: {exc}")
        outcome.duration_ms = (time.perf_counter() - started) * 1000
        return outcome
