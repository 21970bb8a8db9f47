"""Start-up failures end with one line that says what failed and what to try (exit code 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_ray_that_cannot_start_is_retried_once_then_explained(tmp_path: Path, secret: str) -> None:
    # A temp dir this long breaks Ray's AF_UNIX socket paths (107 bytes): Ray fails to start every time.
    long_tmp = tmp_path / ("x" * 100)
    long_tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMLAB_", "RAY_"))}
    env.update(TMPDIR=str(long_tmp), LLMLAB_MESH_SECRET=secret, LLMLAB_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "llmlab_grpc", "node", "--name", "noray", "--host", "127.0.0.1", "--port", "0",
         "--no-mdns", "--roles", "cache", "--cache-store", "ray"],
        capture_output=True, text=True, timeout=240, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "retrying once" in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("llmlab node: error: Ray did not start on this node after 2 tries")
    assert "TMPDIR" in last and "Traceback" not in done.stderr
