"""The ``/v1`` routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /v1/models/{id}``.

Every request is authenticated before its body is read; the body is read with a size
limit (413), parsed (400 on malformed JSON or nesting deeper than ``safejson.MAX_DEPTH``)
and validated (400 naming the field). A model must be known to the mesh: an unknown name
is 404, and no model ever seen is 503. A model once served but offline now is still
asked: a cached answer is a 200, a miss a 503 naming the model. The answer carries
``x-llmlab-cache`` (hit, semantic-hit, miss, bypass, none; a semantic hit adds
``x-llmlab-cache-similarity`` and ``x-llmlab-cache-matched-prompt``, URL-encoded) and
``x-llmlab-task-id`` headers, and a ``llmlab`` field with the trace. Any other ``/v1``
path is a 404 in
OpenAI's error shape.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, cast

from pydantic import ValidationError
from pydantic_core import to_json
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmlab_grpc import safejson
from llmlab_grpc.openai_api import translate
from llmlab_grpc.openai_api.auth import ApiAuth, Principal, default_keys_path
from llmlab_grpc.openai_api.errors import ApiError, bad_request, no_llm_node, unknown_model
from llmlab_grpc.openai_api.gateway import PlannerGateway
from llmlab_grpc.openai_api.hit_answers import HitAnswers
from llmlab_grpc.openai_api.request_memo import RequestMemo, ask_request_bytes
from llmlab_grpc.openai_api.schemas import ChatCompletionRequest, model_entry
from llmlab_grpc.openai_api.streaming import chunks, open_stream
from llmlab_grpc.openai_api.watch import ClientGone, until_answered
from llmlab_grpc.planner.hit_wire import WrittenHit
from llmlab_grpc.proto.llmlab.v1 import planner_pb2

_VALIDATE_JSON = ChatCompletionRequest.__pydantic_validator__.validate_json
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}
_NOTHING_RESERVED: frozenset[str] = frozenset()


def _param(loc: tuple[Any, ...]) -> str:
    """pydantic's ("messages", 0, "role") as OpenAI's "messages[0].role"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in TYPE_TAGS or not str(part).isidentifier():
            continue  # the union branch ("str", "list[ContentPart]", ...) pydantic adds to the location
        else:
            out += f".{part}" if out else str(part)
    return out


def _validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors()[0]
    param = _param(tuple(first["loc"]))
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return bad_request(f"{param}: {message}{more}" if param else f"{message}{more}", param or None)


class ApiSettings(Protocol):
    """The settings the ``/v1`` API reads (``NodeSettings`` fits)."""

    @property
    def mesh_secret(self) -> str: ...

    @property
    def api_keys_file(self) -> Path | None: ...

    @property
    def api_max_body_bytes(self) -> int: ...

    @property
    def api_timeout_s(self) -> float: ...


class OpenAIApi:
    """Handlers of the ``/v1`` routes of one node."""

    def __init__(self, settings: ApiSettings, gateway: PlannerGateway) -> None:
        self.auth = ApiAuth(settings.mesh_secret, settings.api_keys_file or default_keys_path())
        self.gateway = gateway
        self.max_body = settings.api_max_body_bytes
        self.timeout_s = settings.api_timeout_s
        self.requests = RequestMemo()
        """Validated bodies and their queries, by body, header and caller (``request_memo.py``)."""
        self.hit_answers = HitAnswers()
        """Non-streamed answers to exact cache hits, as JSON templates (``hit_answers.py``)."""

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self._guard(self.chat_completions, "POST"), methods=ALL_METHODS),
            Route("/v1/models", self._guard(self.list_models, "GET"), methods=ALL_METHODS),
            Route("/v1/models/{model:path}", self._guard(self.get_model, "GET"), methods=ALL_METHODS),
            Route("/v1/{rest:path}", self._guard(self.not_found, None), methods=ALL_METHODS),
            Route("/v1", self._guard(self.not_found, None), methods=ALL_METHODS),
        ]

    def _guard(self, handler: Callable[[Request, Principal], Awaitable[Response]], method: str | None
               ) -> Callable[[Request], Awaitable[Response]]:
        """Authenticate, check the method, and turn every ``ApiError`` into its JSON answer."""

        async def endpoint(request: Request) -> Response:
            try:
                principal = self.auth.principal(request.headers.get("authorization"))
                if method is not None and request.method != method:
                    raise ApiError(405, f"{request.url.path} takes {method}, not {request.method}",
                                   code="method_not_allowed", headers={"allow": method})
                return await handler(request, principal)
            except ApiError as err:
                return err.response()
            except ClientGone:
                return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

        return endpoint

    # -- /v1/models -------------------------------------------------------------------------
    async def list_models(self, request: Request, principal: Principal) -> Response:
        details = await self.gateway.model_details()
        return JSONResponse({"object": "list", "data": [model_entry(name, nodes) for name, nodes in details.items()]})

    async def get_model(self, request: Request, principal: Principal) -> Response:
        name = request.path_params["model"]
        details = await self.gateway.model_details()
        if name not in details:
            raise unknown_model(name, list(details))
        return JSONResponse(model_entry(name, details[name]))

    async def not_found(self, request: Request, principal: Principal) -> Response:
        raise ApiError(404, f"{request.method} {request.url.path} is not part of the llmlab OpenAI API: it serves "
                            "POST /v1/chat/completions and GET /v1/models", code="unknown_url")

    # -- /v1/chat/completions ---------------------------------------------------------------
    async def _body(self, request: Request) -> bytes | bytearray:
        """The request's body, read up to ``max_body`` bytes (413 beyond)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise self._too_large()
        # The ASGI messages read directly (what Request.stream() does, without an async generator a request).
        body = bytearray()
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()  # it left (or the server's idle timeout closed a trickled body)
            body += message.get("body", b"")
            if len(body) > self.max_body:
                raise self._too_large()
            if not message.get("more_body", False):
                return body

    @staticmethod
    def _chat_request(body: bytes | bytearray) -> ChatCompletionRequest:
        """The validated request, or a 400 saying what is wrong with the body.

        A body with no more brackets than ``safejson.MAX_DEPTH`` cannot nest deeper than it, so
        pydantic parses and validates it in one pass (``model_validate_json``'s validator, no Python
        objects in between). Anything it refuses, and any body with more brackets, takes the
        general way (``safejson.loads``, then validation), which says what is wrong exactly
        as it always has: not JSON, nested too deep, not an object, or the first bad field.
        """
        if body.count(b"[") + body.count(b"{") <= safejson.MAX_DEPTH:
            try:  # model_validate_json without its Python wrapper (a quarter of the cost of a plain request)
                return cast(ChatCompletionRequest, _VALIDATE_JSON(body))
            except ValidationError:
                pass  # the general way below names the problem
        try:
            data = safejson.loads(body)
        except safejson.JsonRefused as exc:
            raise bad_request(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise bad_request("the request body must be a JSON object", code="invalid_json")
        try:
            return ChatCompletionRequest.model_validate(data)
        except ValidationError as exc:
            raise _validation_error(exc) from exc

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the request body is larger than {self.max_body} bytes (the node's "
                             "--api-max-body-bytes)", code="request_too_large")

    async def chat_completions(self, request: Request, principal: Principal) -> Response:
        received = await self._body(request)
        # Only an unpinned per-user key can be refused a namespace; its key file was just
        # checked by principal(), so the pinned namespaces read with it are current.
        reserved = (self.auth.reserved_namespaces(refresh=False) if principal.per_user and not principal.namespace
                    else _NOTHING_RESERVED)
        cache_control = request.headers.get("cache-control", "")
        key = (bytes(received), cache_control, principal, reserved)
        found = self.requests.get(key)
        if found is None:  # validated and translated (a 400 or 403 here is never remembered)
            chat = self._chat_request(received)
            query = translate.to_query(chat, cache_control, principal, reserved)
            asked = ask_request_bytes(query)
            self.requests.put(key, chat, asked)
        else:  # the same body from the same caller as before: its own copy of the same query
            chat, asked = found
            query = planner_pb2.AskRequest.FromString(asked).query
        # A model once served here but offline now still goes to the planner: its cached
        # answers are 200s, and a miss is the planner's 503 naming the offline model.
        if chat.model not in self.gateway.calls.me.models:  # served here: known, nothing to look up
            known = self.gateway.calls.known_models()
            if not known:
                raise no_llm_node()
            if chat.model not in known:
                raise unknown_model(chat.model, self.gateway.model_names() or known)
        created = int(time.time())
        if chat.stream:
            events = self.gateway.events(query, self.timeout_s)
            try:
                opening = await open_stream(events)
            except BaseException:
                await events.aclose()
                raise
            headers = {**opening.headers, "x-llmlab-task-id": opening.task_id,
                       "cache-control": "no-cache", "x-accel-buffering": "no"}
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)

            async def body() -> Any:
                try:
                    async for piece in chunks(opening, events, chat.model, created, include_usage):
                        yield piece
                finally:
                    await events.aclose()

            return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
        task = await until_answered(request, self.gateway.answer(query, self.timeout_s, asked), self.timeout_s)
        if isinstance(task, WrittenHit):  # an exact hit of this node's planner, answered from a template
            return self.hit_answers.response(task, chat.model, created)
        # Encoded by pydantic-core (compact, UTF-8 as is: the bytes JSONResponse would make, several
        # times faster), headers as the raw pairs ASGI sends.
        response = Response(to_json(translate.answer(task, chat.model, created)), media_type="application/json")
        response.raw_headers += translate.cache_header_pairs(translate.answer_step(task))
        response.raw_headers.append((b"x-llmlab-task-id", task.task_id.encode()))
        return response
