"""The state file ``$LLMLAB_HOME/mesh.json`` (default ``./.llmlab/mesh.json``).

``llmlab up`` writes it; client commands read it for the default target and secret.
Format (stable, for scripts in any language)::

    {"secret": "...", "nodes": [{"name": "node1", "address": "127.0.0.1:PORT",
                                 "roles": ["planner", ...], "http_url": "..."}]}

It holds the mesh secret, so it is written with mode 0600 from the first byte.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def home() -> Path:
    return Path(os.environ.get("LLMLAB_HOME") or ".llmlab")


def state_path() -> Path:
    return home() / "mesh.json"


def read_state() -> dict[str, Any] | None:
    path = state_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"llmlab: cannot read state file {path}: {exc}") from exc
    return data if isinstance(data, dict) else None


def write_state(data: dict[str, Any]) -> Path:
    """Atomically replace the state file, never readable by others."""
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path
