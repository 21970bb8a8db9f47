"""The cache key: what makes two LLM calls "the same call".

A key is the sha256 hex of the canonical JSON (sorted keys, no whitespace, UTF-8 kept
as is) of ``{"prompt", "model", "params"}``, where ``params`` holds only the settings
that change what the model generates (``KEY_PARAMS``) and only those that are set,
plus ``"namespace"`` when the entry is in a named namespace (so the default
namespace's keys are the keys made before namespaces existed, and the same prompt in
two namespaces is two entries).
Everything else (streaming, timeouts, which node runs it) is ignored on purpose, so
the same question hits the cache whoever asks it and however the call is shaped.

Values are normalised before hashing so equal settings give equal keys whatever
their spelling: numbers are parsed (``"0.2"``, ``0.2`` and the float32 ``0.2`` of a
``GenerationParams`` proto give one key), ``stop`` is a sorted set, and ``tools_json``
is re-serialised canonically when it is valid JSON.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from llmlab_grpc.proto.llmlab.v1 import common_pb2

KEY_PARAMS: tuple[str, ...] = ("temperature", "top_p", "max_tokens", "seed", "system_prompt", "stop", "tools_json")
"""The generation-affecting parameters; each is a field of ``GenerationParams``."""

_FLOATS = ("temperature", "top_p")
_INTS = ("max_tokens", "seed")
_OPTIONAL_PROTO_FIELDS = ("temperature", "top_p", "max_tokens", "seed")
FLOAT_DIGITS = 6
"""Floats are rounded to this many decimals: a proto float32 0.7 is 0.699999988 as a double."""

Params = common_pb2.GenerationParams | Mapping[str, Any] | None


class InvalidParams(ValueError):
    """A generation parameter has a value that cannot be part of a key (gRPC: INVALID_ARGUMENT)."""


def _float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidParams(f"parameter {name} must be a number, not {value!r}") from exc
    if isinstance(value, bool) or not math.isfinite(number):
        raise InvalidParams(f"parameter {name} must be a finite number, not {value!r}")
    return round(number, FLOAT_DIGITS) + 0.0  # + 0.0 turns -0.0 into 0.0


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidParams(f"parameter {name} must be an integer, not {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidParams(f"parameter {name} must be an integer, not {value!r}") from exc
    if isinstance(value, float) and value != number:
        raise InvalidParams(f"parameter {name} must be an integer, not {value!r}")
    return number


MAX_STOP_ITEMS = 256
"""Stop strings a key is made from (an inference node takes far fewer)."""


def _stop(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    if len(items) > MAX_STOP_ITEMS:
        raise InvalidParams(f"parameter stop has {len(items)} strings; the limit is {MAX_STOP_ITEMS}")
    if not all(isinstance(s, str) for s in items):
        raise InvalidParams("parameter stop must be a string or a list of strings")
    return sorted({_text_param("stop", s) for s in items if s})


MAX_PARAM_TEXT_BYTES = 1024 * 1024
"""Longest string parameter (``tools_json``, ``system_prompt``) a key is made from, UTF-8 bytes.

A key is computed for every lookup, before any cache limit applies: this bound keeps the
canonical JSON of an untrusted request cheap. The cache stores less (``cache_max_params_bytes``)."""


def _text_param(name: str, value: str) -> str:
    if len(value) > MAX_PARAM_TEXT_BYTES or len(value.encode("utf-8")) > MAX_PARAM_TEXT_BYTES:
        raise InvalidParams(f"parameter {name} is longer than the limit of {MAX_PARAM_TEXT_BYTES} bytes")
    return value


def _tools_json(value: Any) -> str:
    text = value
    if not isinstance(text, str):
        try:
            text = json.dumps(value)
        except (ValueError, TypeError, RecursionError) as exc:
            raise InvalidParams("parameter tools_json cannot be written as JSON") from exc
    text = _text_param("tools_json", text)
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except RecursionError as exc:
        raise InvalidParams("parameter tools_json nests too deeply to be read: flatten it") from exc
    except ValueError:
        return text  # not JSON: the backend will say so; the key still distinguishes it


def _raw_items(params: Params) -> dict[str, Any]:
    """The set parameters as plain values, from a proto (presence-aware) or a mapping."""
    if params is None:
        return {}
    if isinstance(params, common_pb2.GenerationParams):
        raw: dict[str, Any] = {n: getattr(params, n) for n in _OPTIONAL_PROTO_FIELDS if params.HasField(n)}
        raw.update(system_prompt=params.system_prompt, stop=list(params.stop), tools_json=params.tools_json)
        return raw
    if isinstance(params, Mapping):
        return {k: v for k, v in params.items() if k in KEY_PARAMS}
    raise InvalidParams(f"generation params must be a GenerationParams or a mapping, not {type(params).__name__}")


def normalize_params(params: Params) -> dict[str, Any]:
    """The generation-affecting parameters that are set, in canonical form.

    Unset, ``None``, empty strings and empty lists are left out; keys that are not in
    ``KEY_PARAMS`` are ignored.
    """
    out: dict[str, Any] = {}
    for name, value in _raw_items(params).items():
        if value is None or (isinstance(value, str | list | tuple) and len(value) == 0):
            continue
        if name in _FLOATS:
            out[name] = _float(name, value)
        elif name in _INTS:
            out[name] = _int(name, value)
        elif name == "stop":
            stop = _stop(value)
            if stop:
                out[name] = stop
        elif name == "tools_json":
            out[name] = _tools_json(value)
        else:
            if not isinstance(value, str):
                raise InvalidParams(f"parameter {name} must be a string, not {value!r}")
            out[name] = _text_param(name, value)
    return out


def params_to_proto(params: Params) -> common_pb2.GenerationParams:
    """A ``GenerationParams`` with the normalised parameters set (and nothing else)."""
    return common_pb2.GenerationParams(**normalize_params(params))


MAX_NAMESPACE_CHARS = 128
_NAMESPACE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@/-")


def check_namespace(namespace: str) -> str:
    """``namespace`` when it is a usable name (empty, or 1-128 of ``A-Za-z0-9._:@/-``); InvalidParams otherwise."""
    if len(namespace) > MAX_NAMESPACE_CHARS or not set(namespace) <= _NAMESPACE_CHARS:
        raise InvalidParams(f"cache namespace {namespace[:40]!r}: use at most {MAX_NAMESPACE_CHARS} letters, digits "
                            "or . _ : @ / -")
    return namespace


def canonical_json(prompt: str, model: str, params: Params = None, namespace: str = "") -> str:
    """The exact text that is hashed; useful to debug why two keys differ."""
    body: dict[str, Any] = {"prompt": prompt, "model": model, "params": normalize_params(params)}
    if namespace:
        body["namespace"] = check_namespace(namespace)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


KEY_MEMO_ENTRIES = 1024
KEY_MEMO_MAX_CHARS = 1024
"""Keys of requests with params as a proto (every gRPC lookup) are remembered, least recently
used first out, when the prompt, model and namespace together and the params' bytes are each at
most this long: at most ~2 KiB of inputs per remembered key, ~3 MiB in all. Normalising and
hashing is most of what a cache hit costs in Python; a repeated question skips it."""


def _hash(prompt: str, model: str, params: Params, namespace: str) -> str:
    return hashlib.sha256(canonical_json(prompt, model, params, namespace).encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=KEY_MEMO_ENTRIES)
def _remembered(prompt: str, model: str, params: bytes, namespace: str) -> str:
    return _hash(prompt, model, common_pb2.GenerationParams.FromString(params), namespace)


def cache_key(prompt: str, model: str, params: Params = None, namespace: str = "") -> str:
    """sha256 hex of ``canonical_json(prompt, model, params, namespace)``."""
    if isinstance(params, common_pb2.GenerationParams) and (
            len(prompt) + len(model) + len(namespace) <= KEY_MEMO_MAX_CHARS):
        raw = params.SerializeToString(deterministic=True)
        if len(raw) <= KEY_MEMO_MAX_CHARS:
            return _remembered(prompt, model, raw, namespace)  # an invalid one raises and is not kept
    return _hash(prompt, model, params, namespace)


def cache_key_of_raw(prompt: str, model: str, params_raw: bytes, namespace: str = "") -> str:
    """``cache_key`` of params given as their deterministic encoding (a caller that keeps it)."""
    if len(prompt) + len(model) + len(namespace) <= KEY_MEMO_MAX_CHARS and len(params_raw) <= KEY_MEMO_MAX_CHARS:
        return _remembered(prompt, model, params_raw, namespace)
    return _hash(prompt, model, common_pb2.GenerationParams.FromString(params_raw), namespace)


def is_deterministic(params: Params) -> bool:
    """True when the same call gives the same answer: greedy (temperature 0) or a seed set.

    A call without a temperature uses the backend's default, which samples, so it is
    not deterministic; such answers are cached only when the caller allows it (the planner's
    ``cache_nondeterministic``). Only the temperature and the seed are read, canonicalised as
    in the key (a temperature that rounds to 0 is 0), and an invalid one makes the call not
    deterministic rather than raising: the planner asks this of every model step.
    """
    try:
        if isinstance(params, common_pb2.GenerationParams):  # the planner's every step: no dict built
            if params.HasField("seed"):
                return True  # an int64 field: always a usable seed
            return params.HasField("temperature") and _float("temperature", params.temperature) == 0.0
        raw = _raw_items(params)
        if raw.get("seed") is not None:
            _int("seed", raw["seed"])
            return True
        temperature = raw.get("temperature")
        return temperature is not None and _float("temperature", temperature) == 0.0
    except InvalidParams:
        return False


def checksum(response: str) -> str:
    """sha256 hex of the UTF-8 response: what a replica's copy is verified against."""
    return hashlib.sha256(response.encode("utf-8")).hexdigest()


def is_key(text: str) -> bool:
    """Whether ``text`` looks like a cache key (64 lowercase hex digits)."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)
