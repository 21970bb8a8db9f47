"""JSON objects in and out of ``google.protobuf.Struct``, the carrier of tool arguments and results.

Struct numbers are doubles, so ``5`` arrives as ``5.0``; ``from_struct`` turns integral
values back into ints (up to 2**53, where doubles are exact) so a tool's pydantic
model sees the integer it was sent, and a CLI prints ``1675``, not ``1675.0``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

_EXACT = 2**53


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def to_struct(data: Mapping[str, Any] | None) -> Struct:
    """A Struct of a JSON-like mapping; values JSON cannot hold are stringified (non-finite → null)."""
    struct = Struct()
    if data:
        plain = json.loads(json.dumps(_json_safe(data), default=str))
        json_format.ParseDict(plain, struct)
    return struct


def _restore(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT:
        return int(value)
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v) for v in value]
    return value


def from_struct(struct: Struct) -> dict[str, Any]:
    """The mapping a Struct holds, with integral numbers as ints."""
    return {key: _restore(value) for key, value in json_format.MessageToDict(struct).items()}
