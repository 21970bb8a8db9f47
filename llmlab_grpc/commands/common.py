"""What several ``llmlab`` subcommands share: the usage error, the RPC timeout, ``--param``.

One module both ``commands/cache.py`` and ``commands/replication.py`` (and ``tools.py``)
import, so no command module imports another: ``cache locate`` lives in
``replication.py`` and ``cache.py`` wires it in with a plain top-level import.
"""

from __future__ import annotations

from typing import Any

from llmlab_grpc.cache.keys import KEY_PARAMS, InvalidParams, params_to_proto
from llmlab_grpc.proto.llmlab.v1 import common_pb2

TIMEOUT_S = 10.0
"""Deadline of a short control RPC (stats, get, put, peers): a node answers these in milliseconds."""


class UsageError(Exception):
    """A bad command line; printed as one line, exit status 2."""


def parse_params(pairs: list[str] | None) -> common_pb2.GenerationParams:
    """``["temperature=0", "stop=###"]`` -> GenerationParams, refusing unknown names."""
    params: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in KEY_PARAMS:
            raise UsageError(f"--param {pair!r}: expected NAME=VALUE with NAME one of {', '.join(KEY_PARAMS)}")
        if name == "stop":
            params.setdefault("stop", []).append(value)
        else:
            params[name] = value
    try:
        return params_to_proto(params)
    except InvalidParams as exc:
        raise UsageError(str(exc)) from exc
