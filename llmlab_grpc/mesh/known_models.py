"""The mesh's models as last seen, kept across the death of every node that serves them.

A cache key names its model, so a planner that forgets the models the moment the last
``llm`` node leaves can no longer name the key of an answer it holds: it would say "no
llm node" about a question its own cache (or a replica) can answer. This keeps the
models this node has seen served in its mesh (its own, and every ``llm`` peer's as it
joins and as it leaves) and the mesh's default model, and persists them in the node's
state directory (``known_models.json``) so a restarted node still knows them.

The file is scoped to the mesh (its ``mesh_id``): a node moved to another mesh, or test
meshes that reuse names, never inherit a stranger's models. Bounded: at most
``MAX_MODELS`` names of at most ``MAX_NAME_CHARS`` characters, newest kept. Writes are
rare (only when the set changes) and done off the event loop when one is running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmlab_grpc.mesh.peers import PeerRecord

log = logging.getLogger(__name__)

FILE_NAME = "known_models.json"
MAX_MODELS = 64
MAX_NAME_CHARS = 256


class KnownModels:
    """Models once served in this mesh, oldest first, and the mesh's default model."""

    def __init__(self, state_dir: Path | None, mesh_id: str) -> None:
        self.path = state_dir / FILE_NAME if state_dir is not None else None
        self.mesh_id = mesh_id
        self._names: list[str] = []
        self._default = ""
        self._write_lock = threading.Lock()
        self._load()

    # -- reading ----------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._names)

    @property
    def default(self) -> str:
        """The default model last seen (the first model of this node, else of the first llm peer)."""
        return self._default or (self._names[0] if self._names else "")

    def __contains__(self, model: object) -> bool:
        return model in self._names

    # -- learning ---------------------------------------------------------------------
    def observe(self, models: Iterable[str], default: str = "") -> None:
        """Remember ``models`` (and ``default`` as the mesh's default); persist when something changed."""
        changed = False
        for name in models:
            if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
                continue
            if name not in self._names:
                self._names.append(name)
                changed = True
        if len(self._names) > MAX_MODELS:
            keep = {default} if default else set()
            extra = len(self._names) - MAX_MODELS
            dropped = [n for n in self._names if n not in keep][:extra]
            self._names = [n for n in self._names if n not in dropped]
        if default and default in self._names and default != self._default:
            self._default = default
            changed = True
        if changed:
            self._save()

    def on_peer(self, event: str, record: PeerRecord) -> None:
        """PeerTable listener: an llm peer's models, as it joins and as it leaves (its last word)."""
        if "llm" in record.info.roles and record.info.models:
            self.observe(record.info.models, default="" if self._default else record.info.models[0])

    # -- the file ---------------------------------------------------------------------
    def _load(self) -> None:
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.path, exc)
            return
        if not isinstance(data, dict) or data.get("mesh_id") != self.mesh_id:
            return
        names = data.get("models")
        if isinstance(names, list):
            self._names = [n for n in names if isinstance(n, str) and n and len(n) <= MAX_NAME_CHARS][-MAX_MODELS:]
        default = data.get("default")
        if isinstance(default, str) and default in self._names:
            self._default = default

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write()
            return
        loop.run_in_executor(None, self._write)

    def _write(self) -> None:
        assert self.path is not None
        with self._write_lock:  # each write takes the state as it is then, so the last one is the newest
            body = json.dumps({"mesh_id": self.mesh_id, "models": list(self._names), "default": self._default})
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(body + "\n")
                os.replace(tmp, self.path)
            except OSError as exc:
                log.warning("could not save the known models to %s: %s", self.path, exc)
