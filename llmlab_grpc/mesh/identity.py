"""Who is calling, as TLS proves it: the names in a caller's client certificate under mTLS.

A request that speaks for a node (``sender_node_id`` of ``Replica.Store``, ``Sync``, ``Drop``)
is only a claim; the mesh secret proves membership, not identity. Under mTLS with a
certificate per node whose common name (or a DNS/URI subject alternative name) is the node
id, the certificate proves who sends, and a node must not speak for another. A certificate
shared by every node names none of them; then the claim is all there is (docs/replication.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

_NAME_KEYS = ("x509_common_name", "x509_subject_alternative_name")


def certificate_names(context: grpc.aio.ServicerContext[Any, Any]) -> set[str]:
    """The common name and subject alternative names of the caller's certificate; empty without mTLS."""
    try:
        auth = context.auth_context() or {}
    except Exception:  # no transport security on this call
        return set()
    names: set[str] = set()
    for key in _NAME_KEYS:
        for value in auth.get(key, []):
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            names.add(text.removeprefix("DNS:").removeprefix("URI:").strip())
    return names


def impersonation(names: set[str], sender: str, node_ids: Iterable[str]) -> str:
    """Why a caller whose certificate says ``names`` may not speak for ``sender`` ("" when it may).

    A certificate that names ``sender`` may. One that names another node of the mesh (a
    per-node certificate) may not. One that names no node may (a shared certificate).
    """
    if not names or sender in names:
        return ""
    others = sorted(names & set(node_ids))
    if others:
        return (f"the caller's certificate names node {others[0]}, which may not send as {sender}: "
                "a node speaks only for itself")
    return ""
