"""The package's shape (issue 14), read with ``ast`` (nothing is imported).

The cache knows nothing of the roles around it: ``llmlab_grpc/cache/`` imports nothing from
replication, planner, inference or bridge (they reach it through ``cache/hooks.py``). And
there is one set of retryable status codes, ``mesh/peer_calls.RETRYABLE_CODES``: no other
module spells out a collection of gRPC status codes of its own. Components get the small
typed ports of ``llmlab_grpc/ports.py``, not the node: only the node's assembly, the
launcher and the CLI import ``llmlab_grpc.node``, and only the node reaches its components
by ``.components[...]`` / ``.components.get(...)``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "llmlab_grpc"
CACHE_MAY_NOT_IMPORT = ("llmlab_grpc.replication", "llmlab_grpc.planner", "llmlab_grpc.inference",
                        "llmlab_grpc.bridge")
RETRYABLE_HOME = "mesh/peer_calls.py"
NODE = ("llmlab_grpc.node",)
MAY_IMPORT_NODE = {"node.py", "assembly.py", "launcher.py", "cli.py", "__main__.py"}
"""Paths in the package that may import the node; ``commands/`` (the CLI) too."""


def _sources() -> list[tuple[str, ast.Module]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("proto/"):
            continue  # generated
        found.append((relative, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))))
    return found


def _imported_modules(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every absolute import, ``from package import module`` as ``package.module``
    (also inside functions and ``TYPE_CHECKING``)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
    return found


def _forbidden(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _status_code_collections(tree: ast.Module) -> list[int]:
    """Lines of a set, frozenset, tuple or list literal of two or more ``StatusCode.X``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Set | ast.Tuple | ast.List) and len(node.elts) >= 2 and all(
                isinstance(e, ast.Attribute) and isinstance(e.value, ast.Attribute | ast.Name)
                and (e.value.attr if isinstance(e.value, ast.Attribute) else e.value.id) == "StatusCode"
                for e in node.elts):
            lines.append(node.lineno)
    return sorted(lines)


def _is_components(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "components"


def _reaches_components(tree: ast.Module) -> list[int]:
    """Lines that index or ``.get`` an attribute named ``components``."""
    lines = []
    for node in ast.walk(tree):
        indexed = isinstance(node, ast.Subscript) and _is_components(node.value)
        got = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
            and _is_components(node.func.value)
        if (indexed or got) and isinstance(node, ast.expr):
            lines.append(node.lineno)
    return sorted(lines)


def test_only_the_node_assembly_launcher_and_cli_import_the_node() -> None:
    offenders = [f"llmlab_grpc/{path}:{line}" for path, tree in _sources()
                 if path not in MAY_IMPORT_NODE and not path.startswith("commands/")
                 for line, module in _imported_modules(tree) if _forbidden(module, NODE)]
    assert offenders == [], "components get ports (llmlab_grpc/ports.py), not the node: " + ", ".join(offenders)


def test_only_the_node_reaches_components_by_name() -> None:
    offenders = [f"llmlab_grpc/{path}:{line}" for path, tree in _sources() if path != "node.py"
                 for line in _reaches_components(tree)]
    assert offenders == [], "a role reaching another is wired in assembly.py: " + ", ".join(offenders)


def test_the_cache_imports_nothing_from_replication_planner_inference_or_bridge() -> None:
    offenders = [f"llmlab_grpc/{path}:{line} imports {module}" for path, tree in _sources()
                 if path.startswith("cache/")
                 for line, module in _imported_modules(tree) if _forbidden(module, CACHE_MAY_NOT_IMPORT)]
    assert offenders == [], "the cache calls out through cache/hooks.py only: " + ", ".join(offenders)


def test_one_set_of_retryable_codes_in_the_code_base() -> None:
    offenders = [f"llmlab_grpc/{path}:{line}" for path, tree in _sources() if path != RETRYABLE_HOME
                 for line in _status_code_collections(tree)]
    assert offenders == [], f"use {RETRYABLE_HOME} (RETRYABLE_CODES, retryable()): " + ", ".join(offenders)
    home = dict(_sources())[RETRYABLE_HOME]
    assert len(_status_code_collections(home)) == 1


def test_the_structure_checks_see_what_they_look_for() -> None:
    """Each check fires on each form it names (a check that never fires proves nothing)."""
    tree = ast.parse(
        "import llmlab_grpc.replication.replicator\n"
        "from llmlab_grpc.planner.mesh_calls import MeshCalls\n"
        "from llmlab_grpc import bridge\n"
        "def f():\n"
        "    from llmlab_grpc.inference import client\n"
        "    from llmlab_grpc.cache.hooks import PeerSource\n"
        "RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}\n"
        "CODES = frozenset((StatusCode.UNAVAILABLE, StatusCode.INTERNAL))\n"
        "ONE = (grpc.StatusCode.UNAVAILABLE, 'x')\n"
    )
    lines = sorted({line for line, module in _imported_modules(tree) if _forbidden(module, CACHE_MAY_NOT_IMPORT)})
    assert lines == [1, 2, 3, 5]
    assert _status_code_collections(tree) == [7, 8]
    tree = ast.parse(
        "import llmlab_grpc.node\n"
        "from llmlab_grpc.node import LlmlabNode\n"
        "from llmlab_grpc import node\n"
        "def f(n):\n"
        "    from llmlab_grpc.nodes import x\n"
        "    n.components['cache']\n"
        "    n.node.components.get('bridge')\n"
        "    n.components_seen['x']\n"
    )
    assert sorted({line for line, module in _imported_modules(tree) if _forbidden(module, NODE)}) == [1, 2, 3]
    assert _reaches_components(tree) == [6, 7]
