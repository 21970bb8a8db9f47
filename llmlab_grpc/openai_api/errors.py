"""Errors of the OpenAI-compatible API, in the shape every OpenAI client parses.

``{"error": {"message", "type", "param", "code"}}`` with the HTTP status the OpenAI
clients map to their exception classes (400 BadRequestError, 401 AuthenticationError,
404 NotFoundError, 413, 429 RateLimitError, 503/504 InternalServerError). A gRPC status
from the planner or a peer becomes the HTTP status that means the same thing, so a
person sees one error vocabulary whichever node failed.
"""

from __future__ import annotations

from typing import Any

import grpc
from starlette.responses import JSONResponse

GRPC_TO_HTTP: dict[grpc.StatusCode, tuple[int, str, str]] = {
    # gRPC status: (HTTP status, OpenAI error type, code)
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error", "invalid_request"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error", "invalid_request"),
    grpc.StatusCode.NOT_FOUND: (404, "invalid_request_error", "not_found"),
    grpc.StatusCode.UNAUTHENTICATED: (502, "server_error", "mesh_auth_failed"),
    grpc.StatusCode.PERMISSION_DENIED: (502, "server_error", "mesh_auth_failed"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error", "mesh_busy"),
    grpc.StatusCode.UNAVAILABLE: (503, "server_error", "unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "server_error", "timeout"),
    grpc.StatusCode.CANCELLED: (503, "server_error", "cancelled"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "server_error", "not_implemented"),
}
"""UNAUTHENTICATED from a peer means *this node's* mesh secret is wrong, not the caller's key: 502."""


class ApiError(Exception):
    """An error answer: HTTP status plus the fields of OpenAI's error object."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    @classmethod
    def from_grpc(cls, code: grpc.StatusCode | None, message: str) -> ApiError:
        status, type_, name = GRPC_TO_HTTP.get(code, (500, "server_error", "internal_error")) if code else (
            500, "server_error", "internal_error")
        headers = {"x-should-retry": "false"} if status == 504 else {}
        return cls(status, message, type_, name, headers=headers)


def bad_request(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, "invalid_request_error", code, param)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, "invalid_request_error", "invalid_api_key", headers={"www-authenticate": "Bearer"})


def no_llm_node() -> ApiError:
    return ApiError(503, "no llm node is alive in the mesh: start a node with the llm role "
                         "(llmlab node --roles llm) and retry", "server_error", "no_llm_node",
                    headers={"retry-after": "2"})


def unknown_model(model: str, known: list[str]) -> ApiError:
    return ApiError(404, f"the model {model!r} does not exist in this mesh; models served now: "
                         f"{', '.join(known)} (GET /v1/models lists them)",
                    "invalid_request_error", "model_not_found", "model")


def deadline(timeout_s: float) -> ApiError:
    return ApiError(504, f"no answer within {timeout_s:g} s (the node's --api-timeout); the work was cancelled",
                    "server_error", "timeout", headers={"x-should-retry": "false"})
