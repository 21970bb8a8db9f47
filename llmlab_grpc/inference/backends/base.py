"""The ``Backend`` contract every model runtime implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from llmlab_grpc.config import ConfigError
from llmlab_grpc.inference.types import Event, Message, ModelDescription, Params


class ModelLoadError(ConfigError):
    """A model cannot be served as configured; the message says what to change."""


@dataclass(frozen=True)
class BackendOptions:
    """Everything a backend needs from the node's settings, as plain values (it crosses into Ray)."""

    url: str = ""
    api_key: str = ""
    timeout_s: float = 120.0
    threads: int = 0


class Backend(ABC):
    """One loaded model. Created and loaded once, inside its Ray actor."""

    kind: ClassVar[str]
    parallel: ClassVar[int] = 1
    """Generations the runtime runs at once; more wait in the actor's queue."""

    def __init__(self, model: str, options: BackendOptions) -> None:
        self.model = model
        self.options = options

    @classmethod
    def served_name(cls, spec: str) -> str:
        """The name clients use for the model configured as ``spec`` (a path becomes its stem)."""
        return spec

    @classmethod
    def default_models(cls, options: BackendOptions) -> list[str]:
        """Models to serve when the node configures none."""
        return []

    @abstractmethod
    def load(self) -> ModelDescription:
        """Load weights or check the server; raise ``ModelLoadError`` when serving is impossible."""

    @abstractmethod
    def generate(self, messages: list[Message], params: Params) -> Iterator[Event]:
        """Yield text pieces as they come, then one ``Usage`` or one ``GenerationError``."""

    def close(self) -> None:
        """Release the runtime (the actor is going away)."""
        return None
