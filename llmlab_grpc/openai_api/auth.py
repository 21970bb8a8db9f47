"""Who may call ``/v1``: the mesh secret, or a per-user API key, as ``Authorization: Bearer``.

API keys live in a JSON file (default ``$LLMLAB_HOME/api_keys.json``, mode 0600) as
sha256 digests, never in clear: ``llmlab apikey add NAME`` prints a key once and stores
its digest. A plain sha256 is enough because the keys are 256-bit random strings (no
dictionary to try); a slow KDF like scrypt would only cost CPU on every request. Every
comparison is constant-time. The file is re-read when it changes, so adding or
removing a key needs no restart.

A key may be **pinned** to a cache namespace (``llmlab apikey add NAME --namespace NS``):
its requests read and write that namespace only, and a namespace some key is pinned to
is closed to every other per-user key (the mesh secret reaches every namespace).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlab_grpc.cache.keys import InvalidParams, check_namespace
from llmlab_grpc.openai_api.errors import ApiError, unauthorized
from llmlab_grpc.state import home

KEY_PREFIX = "llk_"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MESH_PRINCIPAL = "mesh"


def default_keys_path() -> Path:
    return home() / "api_keys.json"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyFileError(ValueError):
    """The key file cannot be read or the request to change it is wrong."""


@dataclass(frozen=True)
class KeyRecord:
    name: str
    sha256: str
    created_unix: int
    namespace: str = ""
    """The cache namespace the key is pinned to; empty: not pinned."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the mesh (secret holder) or a per-user key, and its pinned namespace."""

    name: str
    namespace: str = ""
    per_user: bool = True

    def cache_namespace(self, asked: str | None, reserved: frozenset[str]) -> str:
        """The namespace this caller's request uses; ``ApiError`` 403 when it may not use ``asked``."""
        if self.namespace:
            if asked not in (None, self.namespace):
                raise ApiError(403, f"this API key is pinned to cache namespace {self.namespace!r}; it cannot use "
                                    f"{asked!r}", code="namespace_forbidden")
            return self.namespace
        namespace = asked or ""
        if self.per_user and namespace in reserved:
            raise ApiError(403, f"cache namespace {namespace!r} belongs to the API keys pinned to it",
                           code="namespace_forbidden")
        return namespace


MESH = Principal(MESH_PRINCIPAL, per_user=False)
"""The mesh secret's holder: reaches every namespace, writes as nobody in particular."""


def _read(path: Path) -> list[KeyRecord]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read API key file {path}: {exc}") from exc
    rows = data.get("keys", []) if isinstance(data, dict) else []
    return [KeyRecord(str(r["name"]), str(r["sha256"]), int(r.get("created_unix", 0)), str(r.get("namespace", "")))
            for r in rows if isinstance(r, dict) and "name" in r and "sha256" in r]


def _write(path: Path, records: list[KeyRecord]) -> None:
    """Atomically replace the file, readable by its owner only from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    body: dict[str, Any] = {"keys": [{"name": r.name, "sha256": r.sha256, "created_unix": r.created_unix,
                                      **({"namespace": r.namespace} if r.namespace else {})} for r in records]}
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh, indent=2)
        fh.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def add_key(path: Path, name: str, namespace: str = "") -> str:
    """Create a key for ``name`` (pinned to cache ``namespace`` when given) and return it; only its digest is stored."""
    if not NAME_RE.match(name):
        raise KeyFileError(f"key name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-'")
    try:
        check_namespace(namespace)
    except InvalidParams as exc:
        raise KeyFileError(str(exc)) from exc
    records = _read(path)
    if any(r.name == name for r in records):
        raise KeyFileError(f"a key named {name!r} exists; remove it first (llmlab apikey remove {name})")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    _write(path, [*records, KeyRecord(name, digest(key), int(time.time()), namespace)])
    return key


def remove_key(path: Path, name: str) -> bool:
    records = _read(path)
    kept = [r for r in records if r.name != name]
    if len(kept) == len(records):
        return False
    _write(path, kept)
    return True


def list_keys(path: Path) -> list[KeyRecord]:
    return _read(path)


class ApiAuth:
    """Checks the ``Authorization`` header of a request; ``check`` returns who is calling."""

    def __init__(self, mesh_secret: str, keys_path: Path) -> None:
        self._secret = mesh_secret.encode()
        self.keys_path = keys_path
        self._keys_file = str(keys_path)
        self._records: list[KeyRecord] = []
        self._reserved: frozenset[str] = frozenset()
        self._stamp: tuple[int, int, int] | None = None

    def _keys(self) -> list[KeyRecord]:
        """The file's keys, re-read only when its stamp (mtime, size, inode) changed.

        One ``stat`` a call is the whole cost while the file stays the same, and a key added
        or removed (``_write`` replaces the file: new inode) is seen on the next request.
        """
        try:
            st = os.stat(self._keys_file)
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            try:
                self._records = _read(self.keys_path) if stamp else []
            except KeyFileError:
                self._records = []  # a broken file grants nothing; the mesh secret still works
            self._reserved = frozenset(r.namespace for r in self._records if r.namespace)
            self._stamp = stamp
        return self._records

    def check(self, header: str | None) -> str:
        """The principal's name ("mesh" or a key's name); ``ApiError`` 401 when the header is missing or wrong."""
        return self.principal(header).name

    def reserved_namespaces(self, refresh: bool = True) -> frozenset[str]:
        """Namespaces some key is pinned to: closed to every other per-user key (kept with the keys).

        ``refresh=False`` skips the file's stat: for a caller that just checked a key (``principal``).
        """
        if refresh:
            self._keys()
        return self._reserved

    def principal(self, header: str | None) -> Principal:
        """Who is calling; ``ApiError`` 401 when the header is missing or wrong."""
        if not header:
            raise unauthorized("missing API key: send 'Authorization: Bearer <mesh secret or llmlab API key>' "
                               "(the secret is in .llmlab/mesh.json; llmlab apikey add NAME makes a key)")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("the Authorization header must be 'Bearer <key>'")
        if hmac.compare_digest(token.encode(), self._secret):
            return MESH
        given = digest(token)
        found: KeyRecord | None = None
        for record in self._keys():  # no early exit: the time taken does not depend on which key matched
            if hmac.compare_digest(given, record.sha256):
                found = record
        if found is not None:
            return Principal(found.name, found.namespace)
        raise unauthorized("incorrect API key: it is neither the mesh secret nor a key made with llmlab apikey add")
