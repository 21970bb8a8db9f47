"""The WebSocket wire format: the protobuf JSON mapping of ``llmlab.v1.BridgeEnvelope``.

One text frame carries one envelope, e.g. ``{"id": "7", "heartbeat": {"busy": 0}}``.
Decoding is strict (unknown fields and unknown payloads are refused), so a confused or
hostile client gets an ``INVALID_ARGUMENT`` error back instead of being half-understood.
"""

from __future__ import annotations

import json

from google.protobuf import json_format

from llmlab_grpc import safejson
from llmlab_grpc.proto.llmlab.v1 import bridge_pb2

INVALID_ARGUMENT = "INVALID_ARGUMENT"
UNAUTHENTICATED = "UNAUTHENTICATED"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
NOT_FOUND = "NOT_FOUND"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
PERMISSION_DENIED = "PERMISSION_DENIED"

FROM_MOBILE = frozenset({"hello", "task_result", "heartbeat", "error"})
"""Payloads a mobile node may send; the others only ever travel bridge → mobile."""


class ProtocolError(Exception):
    """A message that is refused with a ``BridgeError``; the socket stays usable unless ``close``."""

    def __init__(self, code: str, message: str, ref_id: str = "", close: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref_id = ref_id
        self.close = close


def decode(text: str) -> bridge_pb2.BridgeEnvelope:
    """Parse one text frame; raises ``ProtocolError(INVALID_ARGUMENT)`` with the reason."""
    try:
        obj = safejson.loads(text)
    except safejson.JsonRefused as exc:
        raise ProtocolError(INVALID_ARGUMENT, f"message is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(INVALID_ARGUMENT, "message must be a JSON object (a BridgeEnvelope)")
    given = obj.get("id")
    ref_id = given if isinstance(given, str) else ""
    envelope = bridge_pb2.BridgeEnvelope()
    try:
        json_format.ParseDict(obj, envelope)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        raise ProtocolError(INVALID_ARGUMENT, f"not a BridgeEnvelope: {exc}", ref_id) from None
    if envelope.WhichOneof("payload") is None:
        known = ", ".join(sorted(FROM_MOBILE))
        raise ProtocolError(INVALID_ARGUMENT, f"envelope has no message; send one of: {known}", ref_id)
    return envelope


def encode(envelope: bridge_pb2.BridgeEnvelope) -> str:
    """The compact JSON text of an envelope (lowerCamelCase names, int64 as strings)."""
    return json.dumps(json_format.MessageToDict(envelope), separators=(",", ":"))


def error(code: str, message: str, ref_id: str = "") -> bridge_pb2.BridgeEnvelope:
    return bridge_pb2.BridgeEnvelope(error=bridge_pb2.BridgeError(code=code, message=message, ref_id=ref_id))
