"""The llm role's in-process API: validate a request, run it on the Ray host, answer in protos.

``InferenceRuntime.generate(request)`` is what the gRPC servicer streams and what a
caller in the same process may use directly (see ``llmlab_grpc.inference.client``):
both get the same validation, limits and ``InferenceError`` status codes.

Limits (documented in docs/inference.md): at most ``MAX_MESSAGES`` turns and
``MAX_PROMPT_CHARS`` characters of content, ``max_tokens`` in 1..``max_tokens_limit``,
``temperature`` in [0, 2], ``top_p`` in (0, 1], at most ``MAX_STOP`` stop strings of
at most ``MAX_STOP_CHARS`` characters, ``tools_json`` a JSON array of at most
``MAX_TOOLS_JSON`` bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from llmlab_grpc.config import NodeSettings
from llmlab_grpc.inference.backends import BackendOptions, ModelLoadError, backend_class
from llmlab_grpc.inference.errors import InferenceError
from llmlab_grpc.inference.types import Message, ModelDescription, Params, Usage
from llmlab_grpc.proto.llmlab.v1 import common_pb2, inference_pb2

log = logging.getLogger(__name__)

MAX_MESSAGES = 256
MAX_PROMPT_CHARS = 200_000
MAX_STOP = 8
MAX_STOP_CHARS = 64
MAX_TOOLS_JSON = 64 * 1024
CHAT_ROLES = ("system", "user", "assistant", "tool")


def backend_options(settings: NodeSettings) -> BackendOptions:
    url = {"ollama": settings.ollama_url, "openai": settings.openai_url}.get(settings.llm_backend, "")
    return BackendOptions(url=url, api_key=settings.openai_api_key if settings.llm_backend == "openai" else "",
                          timeout_s=settings.llm_timeout_s, threads=settings.llm_threads)


class InferenceRuntime:
    """Models of one node on Ray, behind validation. ``await start()``, then ``generate``."""

    def __init__(self, node_id: str, settings: NodeSettings,
                 on_load: Callable[[int], None] = lambda delta: None,
                 on_done: Callable[[str, Usage | None, float, float], None] = lambda *_: None) -> None:
        self.node_id = node_id
        self.settings = settings
        self.backend = settings.llm_backend
        self.options = backend_options(settings)
        self._on_load = on_load
        self._on_done = on_done
        """Hears each generation's end: (model, usage or None when it failed, seconds, decode seconds)."""
        self._host: Any = None  # RayHost once started (imported lazily: importing ray costs ~1 s)
        self.problem = ""  # why the node serves no model, when that is the case

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Join or start Ray, then load every configured model on its actor."""
        from llmlab_grpc.inference.ray_host import RayHost
        from llmlab_grpc.ray_runtime import NoLocalRayNode, ensure_ray

        specs = list(self.settings.llm_models)
        if not specs:
            try:
                specs = await asyncio.to_thread(backend_class(self.backend).default_models, self.options)
            except ModelLoadError as exc:
                self.problem = str(exc)
                log.warning("llm role serves no model: %s", exc)
        address = self.settings.ray_address
        try:
            ensure_ray(address or None, advertise_host=self.settings.advertise_host)  # main thread: see ensure_ray
        except NoLocalRayNode as exc:
            raise ModelLoadError(str(exc)) from exc
        except ConnectionError as exc:
            raise ModelLoadError(
                f"cannot join the Ray cluster at {address}: {exc}. Is `ray start --head` running there? A "
                "cluster with token authentication (RAY_AUTH_MODE=token on its head) needs RAY_AUTH_MODE=token "
                "here too and its token (~/.ray/auth_token or RAY_AUTH_TOKEN); docs/inference.md") from exc
        host = RayHost(self.node_id, self.backend, specs, self.options, self.settings.llm_max_queued, self._on_load)
        try:
            await host.start()
        except BaseException:
            await host.stop()
            raise
        self._host = host

    async def stop(self) -> None:
        if self._host is not None:
            host, self._host = self._host, None
            await host.stop()

    # -- queries --------------------------------------------------------------------------
    def models(self) -> list[ModelDescription]:
        return self._host.models() if self._host is not None else []

    def model_names(self) -> list[str]:
        return [m.name for m in self.models()]

    def list_models(self) -> inference_pb2.ListModelsResponse:
        return inference_pb2.ListModelsResponse(models=[
            inference_pb2.ModelInfo(name=m.name, backend=m.backend, node_id=self.node_id,
                                    context_length=m.context_length, loaded=m.loaded)
            for m in self.models()
        ])

    # -- generation -----------------------------------------------------------------------
    async def generate(self, request: inference_pb2.GenerateRequest) -> AsyncIterator[inference_pb2.GenerateResponse]:
        """Text pieces as ``GenerateResponse(text=…)``, then one ``GenerateResponse(usage=…)``."""
        model, messages, params = self.parse(request)
        started = time.perf_counter()
        first = 0.0
        usage: Usage | None = None
        try:
            async for event in self._host.stream(model, messages, params):
                if isinstance(event, Usage):
                    usage = event
                    yield inference_pb2.GenerateResponse(usage=inference_pb2.Usage(
                        prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens,
                        finish_reason=event.finish_reason, model=model, node_id=self.node_id,
                        tool_calls_json=event.tool_calls_json))
                elif event:
                    first = first or time.perf_counter()
                    yield inference_pb2.GenerateResponse(text=event)
        finally:
            ended = time.perf_counter()
            self._on_done(model, usage, ended - started, ended - first if first else 0.0)

    def parse(self, request: inference_pb2.GenerateRequest) -> tuple[str, list[Message], Params]:
        """Check a request against the node's models and limits; ``InferenceError`` says what is wrong."""
        if self._host is None:
            raise InferenceError(grpc.StatusCode.UNAVAILABLE, f"the llm role of node {self.node_id} is not started")
        if request.model not in self._host.served:
            served = ", ".join(self._host.served) or "no model"
            why = f" ({self.problem})" if self.problem else ""
            raise InferenceError(grpc.StatusCode.NOT_FOUND,
                                 f"model {request.model!r} is not served by node {self.node_id}; "
                                 f"it serves: {served}{why}")
        messages = parse_messages(request.messages, request.params.system_prompt)
        return request.model, messages, parse_params(request.params, self.settings)


def _invalid(message: str) -> InferenceError:
    return InferenceError(grpc.StatusCode.INVALID_ARGUMENT, message)


def parse_messages(turns: Any, system_prompt: str = "") -> list[Message]:
    if not turns:
        raise _invalid("messages is empty: send at least one {role, content} turn, e.g. role 'user'")
    if len(turns) > MAX_MESSAGES:
        raise _invalid(f"{len(turns)} messages is more than the limit of {MAX_MESSAGES}")
    out: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    size = len(system_prompt)
    for i, turn in enumerate(turns):
        if turn.role not in CHAT_ROLES:
            raise _invalid(f"messages[{i}].role {turn.role!r} is not one of {', '.join(CHAT_ROLES)}")
        message: Message = {"role": turn.role, "content": turn.content}
        size += len(turn.content)
        if turn.tool_call_id:
            message["tool_call_id"] = turn.tool_call_id
        if turn.tool_calls_json:
            message["tool_calls"] = _json_array(turn.tool_calls_json, f"messages[{i}].tool_calls_json")
            size += len(turn.tool_calls_json)
        out.append(message)
    if size > MAX_PROMPT_CHARS:
        raise _invalid(f"the conversation has {size} characters, more than the limit of {MAX_PROMPT_CHARS}")
    return out


def parse_params(params: common_pb2.GenerationParams, settings: NodeSettings) -> Params:
    limit = settings.max_tokens_limit
    max_tokens = params.max_tokens if params.HasField("max_tokens") else settings.max_tokens_default
    if not 1 <= max_tokens <= limit:
        raise _invalid(f"max_tokens {max_tokens} is out of bounds: this node allows 1..{limit} (--max-tokens-limit)")
    temperature = params.temperature if params.HasField("temperature") else None
    if temperature is not None and not (math.isfinite(temperature) and 0.0 <= temperature <= 2.0):
        raise _invalid(f"temperature {temperature} is out of bounds: 0..2 (0 is greedy)")
    top_p = params.top_p if params.HasField("top_p") else None
    if top_p is not None and not (math.isfinite(top_p) and 0.0 < top_p <= 1.0):
        raise _invalid(f"top_p {top_p} is out of bounds: greater than 0, at most 1")
    stop = tuple(params.stop)
    if len(stop) > MAX_STOP:
        raise _invalid(f"{len(stop)} stop strings is more than the limit of {MAX_STOP}")
    for s in stop:
        if not s or len(s) > MAX_STOP_CHARS:
            raise _invalid(f"stop string {s!r} must have 1..{MAX_STOP_CHARS} characters")
    tools = None
    if params.tools_json:
        if len(params.tools_json.encode()) > MAX_TOOLS_JSON:
            raise _invalid(f"tools_json is larger than the limit of {MAX_TOOLS_JSON} bytes")
        tools = _json_array(params.tools_json, "tools_json")
    return Params(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                  seed=params.seed if params.HasField("seed") else None, stop=stop, tools=tools)


def _json_array(text: str, what: str) -> list[dict[str, Any]]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _invalid(f"{what} is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise _invalid(f"{what} nests too deeply to be read: flatten it") from exc
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _invalid(f"{what} must be a JSON array of objects (OpenAI-style)")
    return value
