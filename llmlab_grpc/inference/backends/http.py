"""What the HTTP backends (Ollama, OpenAI-compatible) share: a client, and failures as status codes.

Every failure names the server's URL, because "the backend is down" is only
actionable when the operator knows which backend: the gRPC client sees
UNAVAILABLE "ollama backend at http://…:11434 is unreachable (…)".
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from llmlab_grpc.inference.backends.base import Backend, BackendOptions, ModelLoadError
from llmlab_grpc.inference.types import GenerationError

MAX_ERROR_BODY = 300
"""Characters of a server's error body quoted back to the client."""


class HttpBackend(Backend):
    """A model served by another process over HTTP; the actor holds one pooled client."""

    parallel = 4  # the server batches or queues; a few streams at once keep it busy
    models_path = ""
    """Where the server lists its models, below ``base_url`` (``/api/tags``, ``/models``)."""
    models_field = ""
    """The JSON field holding that list (``models``, ``data``)."""
    name_field = ""
    """The field naming a model in it (``name``, ``id``)."""

    def __init__(self, model: str, options: BackendOptions) -> None:
        super().__init__(model, options)
        self.url = self.base_url(options.url)
        self.client = make_client(options)

    @classmethod
    def base_url(cls, url: str) -> str:
        return url.rstrip("/")

    @classmethod
    def listed_models(cls, client: httpx.Client, url: str) -> dict[str, dict[str, Any]]:
        """name → the server's record of every model it lists; raises httpx/JSON errors."""
        response = client.get(f"{url}{cls.models_path}")
        response.raise_for_status()
        return {m[cls.name_field]: m for m in response.json().get(cls.models_field, []) if m.get(cls.name_field)}

    @classmethod
    def default_models(cls, options: BackendOptions) -> list[str]:
        """Every model the server lists, so naming the backend alone serves what it has."""
        url = cls.base_url(options.url)
        with make_client(options) as client:
            try:
                return list(cls.listed_models(client, url))
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                failure = describe_failure(cls.kind, url, options.timeout_s, exc)
                raise ModelLoadError(f"{failure.message}; or name the models with --llm-models") from exc

    def close(self) -> None:
        self.client.close()

    def failure(self, exc: Exception) -> GenerationError:
        return describe_failure(self.kind, self.url, self.options.timeout_s, exc)

    def status_failure(self, response: httpx.Response) -> GenerationError:
        return describe_status(self.kind, self.url, self.model, response)


def make_client(options: BackendOptions) -> httpx.Client:
    headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
    timeout = httpx.Timeout(options.timeout_s, connect=min(5.0, options.timeout_s))
    # trust_env=False: a proxy configured for the user's browser must not sit between a node and its model server.
    return httpx.Client(timeout=timeout, headers=headers, trust_env=False)


def describe_failure(kind: str, url: str, timeout_s: float, exc: Exception) -> GenerationError:
    """A transport failure as a status code and a sentence."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return GenerationError("UNAVAILABLE", f"{kind} backend at {url} is unreachable ({exc or type(exc).__name__}); "
                                              "is the server running?")
    if isinstance(exc, httpx.TimeoutException):
        return GenerationError("DEADLINE_EXCEEDED", f"{kind} backend at {url} sent nothing for {timeout_s:g} s")
    if isinstance(exc, httpx.TransportError):
        return GenerationError("UNAVAILABLE", f"connection to the {kind} backend at {url} broke: "
                                              f"{exc or type(exc).__name__}")
    if isinstance(exc, ValueError):  # a line that is not the JSON the API promises
        return GenerationError("UNAVAILABLE", f"{kind} backend at {url} sent something that is not its API: {exc}")
    return GenerationError("INTERNAL", f"{kind} backend at {url}: {type(exc).__name__}: {exc}")


def describe_status(kind: str, url: str, model: str, response: httpx.Response) -> GenerationError:
    """A non-2xx answer as a status code; the server's own words are quoted (shortened)."""
    try:
        body = response.read().decode("utf-8", "replace")
    except httpx.HTTPError:
        body = ""
    said = _error_text(body)[:MAX_ERROR_BODY]
    status = response.status_code
    where = f"{kind} backend at {url} answered HTTP {status}"
    if status == 404:
        return GenerationError("NOT_FOUND", f"{where}: it does not serve model {model!r} ({said})")
    if status in (401, 403):
        return GenerationError("PERMISSION_DENIED", f"{where}: check the API key ({said})")
    if status == 429:
        return GenerationError("RESOURCE_EXHAUSTED", f"{where}: rate limited ({said})")
    if status in (400, 413, 422):
        return GenerationError("INVALID_ARGUMENT", f"{where}: {said}")
    return GenerationError("UNAVAILABLE", f"{where}: {said}")


def _error_text(body: str) -> str:
    """``{"error": "..."}`` (Ollama) or ``{"error": {"message": "..."}}`` (OpenAI), else the body."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return body.strip()
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error or body).strip()

