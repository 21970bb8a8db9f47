"""One Ray runtime per node process, started lazily by whichever role needs it first.

A node alone starts its own local Ray (never attaching silently to another node's,
so one node's death cannot take another down): ``ray.init(address="local")``. With
``--ray-address`` (or ``LLMLAB_RAY_ADDRESS``) it joins that cluster instead; ``llmlab up``
starts one head for its nodes. Init takes about 4 s (measured on a 2-core machine).

A node joining a cluster over the LAN tells Ray its own address (``_node_ip_address``):
the one of ``--advertise-host`` when that is this machine's, else the address this
machine's routes use to reach the head. Left to guess, Ray attached the driver of a
second host to the head's Ray node rather than its own, and a streaming generator from
an actor then never yielded (measured on two network-namespace hosts; tests/lan/test_lan_ray.py); machines
with several interfaces (docker0, VPNs) make the guess worse.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass
from typing import Any

from llmlab_grpc.errors import RayStartError
from llmlab_grpc.mesh.addresses import local_addresses, primary_host

log = logging.getLogger(__name__)
_lock = threading.Lock()


def ensure_ray(address: str | None = None, num_cpus: int | None = None, advertise_host: str = "") -> Any:
    """Initialise Ray once for this process and return the ``ray`` module.

    Call it on the main thread: Ray ties the local cluster's processes to the thread that
    started them, so a Ray started from a worker thread dies when that thread ends.
    ``advertise_host`` (the node's ``--advertise-host``) is preferred as this machine's
    address in a cluster over the LAN when it is one of this machine's addresses.
    """
    global _attached
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
        elif not target.startswith("ray://"):  # Ray Client runs no local driver: nothing to attach
            node_ip = own_node_ip(target, advertise_host)
            if node_ip:
                kwargs["_node_ip_address"] = node_ip
        log.info("starting Ray (%s%s)", target,
                 f", this machine as {kwargs['_node_ip_address']}" if "_node_ip_address" in kwargs else "")
        # ray.init replaces the SIGTERM handler with one that calls sys.exit, which would
        # skip the node's graceful stop (goodbyes, drain); put the process's own back.
        on_main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if on_main else None
        try:
            _init_with_one_retry(ray, kwargs)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        _attached = _describe_attachment(ray, own_cluster=target == "local")
        log.info("Ray driver attached to Ray node %s at %s (%s)", _attached.ray_node_id[:8], _attached.ray_node_ip,
                 "this machine" if _attached.on_this_machine else "ANOTHER machine")
        return ray


@dataclass(frozen=True)
class Attachment:
    """The Ray node this process's driver attached to (``llmlab doctor`` reports it)."""

    cluster_address: str
    ray_node_id: str
    ray_node_ip: str
    on_this_machine: bool
    own_cluster: bool


_attached: Attachment | None = None


def attachment() -> Attachment | None:
    """Where this process's Ray driver runs; None until (unless) Ray was started here."""
    return _attached


def _describe_attachment(ray: Any, own_cluster: bool) -> Attachment:
    """Read once after ``ray.init`` (one GCS call): never on a request path."""
    context = ray.get_runtime_context()
    node_id = str(context.get_node_id())
    ip = next((str(n.get("NodeManagerAddress", "")) for n in ray.nodes() if n.get("NodeID") == node_id), "")
    return Attachment(cluster_address=str(context.gcs_address or ""), ray_node_id=node_id, ray_node_ip=ip,
                      on_this_machine=ip in {a.ip for a in local_addresses()}, own_cluster=own_cluster)


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
            if "_node_ip_address" in kwargs and _no_local_raylet(exc):
                # Ray waited a minute for a raylet of this machine: a retry would wait another.
                ip, target = kwargs["_node_ip_address"], kwargs["address"]
                with contextlib.suppress(Exception):
                    ray.shutdown()
                raise NoLocalRayNode(
                    f"this machine ({ip}) has no Ray node in the cluster at {target}: run `ray start "
                    f"--address={target} --node-ip-address={ip}` here first (docs/inference.md)") from exc
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


def _no_local_raylet(exc: BaseException | None) -> bool:
    """Ray's "No node info found matching attributes" (wrapped by ray.init in a ConnectionError)."""
    for _ in range(5):
        if exc is None:
            return False
        if "No node info found" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class NoLocalRayNode(ConnectionError):
    """Joining a cluster over the LAN needs a Ray node (``ray start --address``) on this machine."""


def own_node_ip(address: str, advertise_host: str = "") -> str:
    """This machine's address in the Ray cluster at ``address``; empty when it cannot be told.

    ``advertise_host`` wins when it resolves to an address of this machine (a name or
    address that is not local, e.g. a NAT's, would leave Ray looking for a raylet that
    does not exist). Otherwise the source address of this machine's route to the head:
    the interface that actually reaches the cluster, whatever docker0 or a VPN holds.
    """
    if advertise_host:
        chosen = _resolve(advertise_host)
        if chosen and chosen in {a.ip for a in local_addresses()}:
            return chosen
        log.warning("--advertise-host %s is not an address of this machine: Ray uses the route to its head",
                    advertise_host)
    head = head_host(address)
    via_route = route_source(head) if head else None
    if via_route and not via_route.startswith("127."):
        return via_route
    return "" if via_route else primary_host()  # no route to the head: this host's own chosen LAN address


def head_host(address: str) -> str:
    """The head's host from ``HOST:PORT``; for ``auto``, from the cluster Ray started on this machine."""
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            address = canonicalize_bootstrap_address("auto") or ""
        except Exception:  # a private API, and no local cluster at all: Ray will say so itself
            return ""
    host, sep, port = address.rpartition(":")
    return host.strip("[]") if sep and port.isdigit() else address


def route_source(host: str) -> str | None:
    """The local address the routing table picks to reach ``host`` (a UDP connect sends nothing)."""
    try:
        infos = socket.getaddrinfo(host, 9, type=socket.SOCK_DGRAM)
    except OSError:
        return None
    for family, _type, _proto, _name, sockaddr in infos:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect(sockaddr)
            except OSError:
                continue
            return str(sock.getsockname()[0])
    return None


def _resolve(host: str) -> str:
    try:
        return str(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])
    except (OSError, IndexError):
        return ""


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
    if "ray._private.ray_constants" in sys.modules:  # ray already imported: the flag was read at import time
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
