"""scripts/check_contracts: buf breaking against the previous commit, in a throwaway git repo.

A retyped field fails the check with buf's line; the same commit passes when its message says
the break is deliberate; a repo with one commit has nothing to compare with and passes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUF = Path(sys.executable).parent / "buf"
FIELD = "int64 max_age_ms = 4;"

pytestmark = pytest.mark.skipif(not BUF.exists() or shutil.which("git") is None, reason="needs buf and git")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=repo,
                   check=True, capture_output=True, timeout=30)


def _check(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "scripts/check_contracts"], cwd=repo, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "BUF": str(BUF)})


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "check_contracts", tmp_path / "scripts" / "check_contracts")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "contracts as they are")
    return tmp_path


def test_one_commit_has_nothing_to_compare_with(repo: Path) -> None:
    result = _check(repo)
    assert result.returncode == 0, result.stderr
    assert "buf breaking skipped" in result.stdout


def test_a_retyped_field_fails_unless_the_commit_says_it_is_deliberate(repo: Path) -> None:
    proto = repo / "protos" / "llmlab" / "v1" / "cache.proto"
    assert FIELD in proto.read_text()
    proto.write_text(proto.read_text() + "\n// Added.\nmessage AddedForTheTest {\n  string note = 1;\n}\n")
    _git(repo, "commit", "-qam", "an additive change: a new message")
    added = _check(repo)
    assert added.returncode == 0, added.stderr

    proto.write_text(proto.read_text().replace(FIELD, "int32 max_age_ms = 4;"))
    _git(repo, "commit", "-qam", "narrow a field")
    broken = _check(repo)
    assert broken.returncode != 0
    assert 'changed type from "int64" to "int32"' in broken.stderr
    assert "Contract-Break:" in broken.stderr  # the message says how to make a break deliberate

    _git(repo, "commit", "-q", "--amend", "-m", "narrow a field\n\nContract-Break: no client sends it yet")
    deliberate = _check(repo)
    assert deliberate.returncode == 0, deliberate.stderr
    assert "deliberate" in deliberate.stderr
