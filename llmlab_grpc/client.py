"""Blocking client used by the CLI and scripts: finds the target node and the secret.

Resolution order for the target: ``--target``, ``LLMLAB_TARGET``, the first node of the
state file. For the secret: ``--secret``, ``LLMLAB_MESH_SECRET``, the state file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from llmlab_grpc.mesh.auth import bearer
from llmlab_grpc.mesh.channels import CHANNEL_OPTIONS, TlsFiles
from llmlab_grpc.state import read_state, state_path


class ClientError(SystemExit):
    """A problem the user can fix; the CLI prints it and exits non-zero."""


@dataclass
class MeshClient:
    """A channel to one node plus the metadata every call needs."""

    target: str
    secret: str
    tls: TlsFiles | None = None

    def __post_init__(self) -> None:
        if self.tls is None:
            self.channel = grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        else:
            self.channel = grpc.secure_channel(self.target, self.tls.channel_credentials(), options=CHANNEL_OPTIONS)
        self.metadata = bearer(self.secret)

    def close(self) -> None:
        self.channel.close()

    @classmethod
    def from_args(cls, args: Any) -> MeshClient:
        """``resolve`` from the client flags every command shares (``cli._add_client_flags``)."""
        return cls.resolve(args.target, args.secret, args.tls_cert, args.tls_key, args.tls_ca)

    @classmethod
    def resolve(
        cls,
        target: str | None = None,
        secret: str | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls_ca: Path | None = None,
    ) -> MeshClient:
        state = read_state() or {}
        target = target or os.environ.get("LLMLAB_TARGET")
        if not target:
            nodes = state.get("nodes") or []
            if not nodes:
                raise ClientError(
                    f"llmlab: no target: pass --target HOST:PORT or start a mesh with `llmlab up` "
                    f"(no nodes in {state_path()})"
                )
            target = nodes[0]["address"]
        secret = secret or os.environ.get("LLMLAB_MESH_SECRET") or state.get("secret")
        if not secret:
            raise ClientError("llmlab: no mesh secret: pass --secret or set LLMLAB_MESH_SECRET")
        tls = TlsFiles(tls_cert, tls_key, tls_ca) if tls_cert and tls_key else None
        return cls(target=target, secret=secret, tls=tls)


def describe_rpc_error(err: grpc.RpcError, target: str) -> str:
    """One line a person can act on."""
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    connect_words = ("failed to connect", "connection refused", "connect failed", "dns resolution", "socket closed")
    if code == grpc.StatusCode.UNAVAILABLE and any(w in (details or "").lower() for w in connect_words):
        return f"llmlab: cannot reach node {target} ({details}); is the mesh running (`llmlab up`)?"
    name = code.name if code is not None else "ERROR"
    return f"llmlab: {name}: {details}"
