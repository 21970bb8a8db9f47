"""Model runtimes behind one interface, each hosted inside a Ray actor.

A backend turns ``(messages, Params)`` into a *synchronous* generator of events:
text pieces as they are produced, then exactly one ``Usage`` (or one
``GenerationError``). Synchronous because it runs in a Ray actor thread, where
llama.cpp blocks the CPU anyway and an HTTP stream is just a blocking read; the
actor turns each yield into a Ray streaming-generator item.

Backends are looked up by name and imported lazily, so a node serving Ollama
never imports llama.cpp.
"""

from __future__ import annotations

import importlib

from llmlab_grpc.inference.backends.base import Backend, BackendOptions, ModelLoadError

BACKENDS: dict[str, str] = {
    "llama_cpp": "llmlab_grpc.inference.backends.llama_cpp:LlamaCppBackend",
    "ollama": "llmlab_grpc.inference.backends.ollama:OllamaBackend",
    "openai": "llmlab_grpc.inference.backends.openai:OpenAIBackend",
}


def backend_class(kind: str) -> type[Backend]:
    """The class of backend ``kind``; ``ModelLoadError`` naming the choices when unknown."""
    target = BACKENDS.get(kind)
    if target is None:
        raise ModelLoadError(f"unknown llm backend {kind!r}; choose from {', '.join(BACKENDS)}")
    module, _, name = target.partition(":")
    cls: type[Backend] = getattr(importlib.import_module(module), name)
    return cls


__all__ = ["BACKENDS", "Backend", "BackendOptions", "ModelLoadError", "backend_class"]
