"""One Ray head as its own process, for ``llmlab up`` (and tests): every local node joins it.

``ray start --head --block`` runs in the foreground and owns the head's processes
(GCS, raylet, agents): SIGTERM to it stops exactly that head and nothing else, where
``ray stop`` would kill every Ray on the machine, other users' included. The head
binds to 127.0.0.1 only (``LOOPBACK_ENV``), with every port chosen free up front, and
its session files live under ``$LLMLAB_HOME/ray`` (or a short /tmp directory when that
path is too long for Ray's unix sockets).

Usage (the launcher)::

    head = RayHead.start()               # ~4 s; raises RayHeadError with the log on failure
    node_cmd += head.node_args()          # ["--ray-address", "127.0.0.1:PORT"]
    node_env.update(head.node_env())      # RAY_AUTH_MODE=token, loopback only
    ...
    head.stop()                           # SIGTERM, then SIGKILL of its group after a grace

The head runs with Ray's token authentication (``RAY_AUTH_MODE=token``; Ray 2.60's ``ray start``
leaves it off unless told or a token exists): the head and the nodes read the same
``~/.ray/auth_token``, which is created here (0600, atomically) before the head
starts so two Rays starting at once cannot each write a different one. A driver
joining by explicit address uses the token only with ``RAY_AUTH_MODE=token`` in its
environment, hence ``node_env()``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from llmlab_grpc.ray_runtime import LOOPBACK_ENV
from llmlab_grpc.state import home

READY_LINE = "Ray runtime started"
JOIN_ENV = {"RAY_AUTH_MODE": "token"}
START_TIMEOUT_S = 60.0
MAX_SOCKET_DIR = 40
"""Longest temp dir we give Ray: its session dir adds ~60 characters and a unix socket path caps at 107."""


class RayHeadError(RuntimeError):
    """The head did not start; the message quotes the end of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_auth_token() -> Path:
    """Create Ray's default token file if missing, without racing another Ray doing the same."""
    path = Path.home() / ".ray" / "auth_token"
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path


def _temp_dir(base: Path) -> tuple[Path, bool]:
    """``$LLMLAB_HOME/ray`` when short enough, else a fresh /tmp dir (second value: remove it on stop)."""
    wanted = (base / "ray").resolve()
    if len(str(wanted)) <= MAX_SOCKET_DIR:
        wanted.mkdir(parents=True, exist_ok=True)
        return wanted, False
    return Path(tempfile.mkdtemp(prefix="llmlab-ray-")), True


@dataclass
class RayHead:
    """A running head: its address and the ``ray start --block`` process that owns it."""

    address: str
    process: subprocess.Popen[bytes]
    temp_dir: Path
    log_path: Path
    remove_temp_dir: bool = False
    ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def start(cls, num_cpus: int | None = None, timeout_s: float = START_TIMEOUT_S,
              home_dir: Path | None = None) -> RayHead:
        """Start a head on 127.0.0.1 and wait until it accepts drivers (files under ``home_dir``/$LLMLAB_HOME)."""
        base = home_dir or home()
        ray_cli = Path(sys.executable).with_name("ray")
        if not ray_cli.exists():
            found = shutil.which("ray")
            if found is None:
                raise RayHeadError("no `ray` command next to this Python: pip install 'ray[default]'")
            ray_cli = Path(found)
        ensure_auth_token()
        temp_dir, remove = _temp_dir(base)
        ports = {name: free_port() for name in ("port", "ray-client-server-port", "dashboard-agent-listen-port",
                                                "dashboard-agent-grpc-port", "runtime-env-agent-port",
                                                "metrics-export-port")}
        cmd = [str(ray_cli), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
               f"--num-cpus={num_cpus or max(2, os.cpu_count() or 2)}", "--include-dashboard=false",
               "--disable-usage-stats", f"--temp-dir={temp_dir}",
               *(f"--{name}={port}" for name, port in ports.items())]
        log_dir = base / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / "ray-head.log"
        env = {**os.environ, **JOIN_ENV, **LOOPBACK_ENV, "RAY_USAGE_STATS_ENABLED": "0"}
        with open(log_path, "wb") as log:
            # Its own session: a Ctrl-C in the launcher's terminal reaches the launcher, which stops
            # the head in order, instead of killing the head under nodes that are still draining.
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, start_new_session=True)
        head = cls(address=f"127.0.0.1:{ports['port']}", process=process, temp_dir=temp_dir,
                   log_path=log_path, remove_temp_dir=remove, ports=ports)
        head._await_ready(timeout_s)
        return head

    def _await_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RayHeadError(f"ray start exited with {self.process.returncode}: {self._log_tail()}")
            if READY_LINE in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        self.stop()
        raise RayHeadError(f"the Ray head did not start within {timeout_s:.0f} s: {self._log_tail()}")

    def _log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return f"(no log at {self.log_path})"
        return " | ".join(text[-lines:]) + f" (full log: {self.log_path})"

    def node_args(self) -> list[str]:
        """Flags that make an ``llmlab node`` join this head."""
        return ["--ray-address", self.address]

    def node_env(self) -> dict[str, str]:
        """Environment a process needs to join the head: merge it into the node processes' env.

        ``RAY_AUTH_MODE=token``: Ray only sends its token to a cluster named by an explicit
        address when told to. ``LOOPBACK_ENV``: dial the head on 127.0.0.1 (``ensure_ray``
        also applies it in-process, this covers anything that imports Ray earlier).
        """
        return {**JOIN_ENV, **LOOPBACK_ENV}

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the ``ray start --block`` process (it stops its Ray processes), SIGKILL its group after grace."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.remove_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
