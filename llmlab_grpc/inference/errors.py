"""The one exception the inference API raises, carrying the gRPC status a client should see."""

from __future__ import annotations

import grpc


class InferenceError(Exception):
    """A generation failed or was refused; ``code`` is what the gRPC client gets, ``message`` why.

    The servicer turns it into ``context.abort(code, message)``; the client helper turns an
    ``AioRpcError`` back into it, so a caller (the planner) handles a local and a remote
    generation the same way, e.g. failing over on ``UNAVAILABLE``.
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def named(cls, code_name: str, message: str) -> InferenceError:
        """From a status name such as ``"UNAVAILABLE"`` (what backends report across Ray)."""
        code = getattr(grpc.StatusCode, code_name, grpc.StatusCode.INTERNAL)
        return cls(code, message)
