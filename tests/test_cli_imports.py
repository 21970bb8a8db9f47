"""The ``llmlab`` command modules import shared helpers from ``commands/common.py``, never each other.

Two command modules importing each other forced imports inside functions and made the
order of imports matter; the one exception is ``cache.py`` wiring in ``cache locate``
from ``replication.py``, which imports nothing back.
"""

from __future__ import annotations

import ast
from pathlib import Path

import llmlab_grpc.commands

COMMANDS = Path(llmlab_grpc.commands.__file__).parent
ALLOWED = {("cache", "replication")}


def _command_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        found.update(n.split(".")[2] for n in names if n.startswith("llmlab_grpc.commands."))
    return found


def test_command_modules_do_not_import_each_other() -> None:
    edges = {(path.stem, other) for path in COMMANDS.glob("*.py")
             for other in _command_imports(path) if other != "common"}
    assert edges <= ALLOWED, f"command modules importing each other: {sorted(edges - ALLOWED)}"
    assert not _command_imports(COMMANDS / "common.py"), "commands/common.py must import no command module"
    assert "cache" not in _command_imports(COMMANDS / "replication.py")
