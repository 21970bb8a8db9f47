"""One Ray runtime per node process, started lazily by whichever role needs it first.

A node alone starts its own local Ray (never attaching silently to another node's,
so one node's death cannot take another down): ``ray.init(address="local")``. With
``--ray-address`` (or ``LLMLAB_RAY_ADDRESS``) it joins that cluster instead; ``llmlab up``
starts one head for its nodes. DESIGN.md §5: init takes about 4 s here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Any

from llmlab_grpc.errors import RayStartError

log = logging.getLogger(__name__)
_lock = threading.Lock()
_started_address: str | None = None


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Initialise Ray once for this process and return the ``ray`` module.

    Call it on the main thread: Ray ties the local cluster's processes to the thread that
    started them, so a Ray started from a worker thread dies when that thread ends.
    """
    global _started_address
    import ray

    with _lock:
        if ray.is_initialized():
            return ray
        target = address or os.environ.get("LLMLAB_RAY_ADDRESS") or "local"
        kwargs: dict[str, Any] = {
            "address": target,
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": True,
            "logging_level": logging.WARNING,
        }
        if target == "local":
            kwargs["num_cpus"] = num_cpus or max(2, os.cpu_count() or 2)
        if target == "local" or is_loopback_address(target):
            keep_ray_on_loopback()
        log.info("starting Ray (%s)", target)
        # ray.init replaces the SIGTERM handler with one that calls sys.exit, which would
        # skip the node's graceful stop (goodbyes, drain); put the process's own back.
        on_main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if on_main else None
        try:
            _init_with_one_retry(ray, kwargs)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        _started_address = target
        return ray


def _init_with_one_retry(ray: Any, kwargs: dict[str, Any]) -> None:
    """``ray.init``, retried once: on a loaded machine a raylet sometimes misses its start-up
    deadline ("The current node timed out during startup") and the second try works. A second
    failure becomes a RayStartError whose one line says what failed and what to try."""
    for attempt in (1, 2):
        try:
            ray.init(**kwargs)
            return
        except Exception as exc:  # Ray raises bare Exception/RuntimeError/ConnectionError here
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            with contextlib.suppress(Exception):
                ray.shutdown()  # a half-started local cluster must not linger
            if attempt == 1:
                log.warning("Ray did not start (%s); retrying once", first_line)
                continue
            if isinstance(exc, ConnectionError):
                raise  # joining a cluster: the caller names the cluster and what to check
            if "AF_UNIX" in first_line or "socket" in first_line.lower():
                hint = "Ray's socket paths live under TMPDIR: set TMPDIR (or RAY_TMPDIR) to a short path such as /tmp"
            elif kwargs["address"] != "local":
                hint = "check that the Ray head is up and reachable from this host (`ray status` on the head)"
            else:
                hint = ("the machine may be overloaded or short of memory: free some and start again, or join "
                        "a running Ray with --ray-address HOST:PORT")
            raise RayStartError(f"Ray did not start on this node after 2 tries ({first_line}); {hint}") from exc


LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Ray's switch for a one-machine cluster: every Ray process binds and dials 127.0.0.1.

Without it Ray rewrites 127.0.0.1 to the machine's LAN address, so a node could not
join a head bound to loopback, and a node's private Ray would listen on the LAN.
Processes that join a loopback head (``llmlab up``'s nodes) need it in their
environment before ``ray`` is imported; ``ensure_ray`` sets it for its own process.
"""


def is_loopback_address(address: str) -> bool:
    host = address.removeprefix("ray://").rpartition(":")[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def keep_ray_on_loopback() -> None:
    """Apply ``LOOPBACK_ENV`` to this process (and so to the Ray processes it starts)."""
    import sys

    os.environ.update(LOOPBACK_ENV)
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # ray already imported: the flag was read at import time
        constants.ENABLE_RAY_CLUSTER = False


def shutdown_ray() -> None:
    """Stop this process's Ray connection (and its local cluster, when it owns one)."""
    global _started_address
    import ray

    with _lock:
        if ray.is_initialized():
            ray.shutdown()
        _started_address = None
