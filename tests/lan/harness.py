"""A LAN on one machine: hosts as network namespaces on a Linux bridge, real `llmlab node`s in them.

Every test of the mesh before this one bound 127.0.0.1, where a node has one address and
multicast always works. A LAN is different: each host has its own address, often extra
interfaces (a ``docker0`` bridge holding 172.17.0.1 on every developer machine, a second
network, a link-local address), and links fail in one direction. This module builds that
with the kernel's own parts, so nodes run exactly as users start them (no ``--host``, mDNS
on every interface, no seeds).

Layout of one ``Lan`` (``P`` is the run's prefix, ``llan<pid>`` plus an optional tag)::

    namespace Psw (the switch):  br0 192.168.50.254/24   [br1 10.44.0.254/24 for the second LAN]
    namespace Ph1 .. PhK:        lo, eth0 192.168.50.1N/24 on br0, [eth1 10.44.0.1N/24 on br1],
                                 [docker0 172.17.0.1/16 with one container veth], [169.254.50.N/16]

Every run's LAN lives in namespaces of its own, never in the machine's namespace, so runs
of several engineers at once can use the same addresses without colliding; the test
process reaches nodes through a small gRPC caller (``probe.py``) running in the switch
namespace. Names that the machine shares (namespaces, per-host temp dirs) carry the pid.

Faults are nftables rules in a table of the host's own namespace (``inet P``):
``drop_mdns`` (5353/udp both ways: client isolation), ``drop_inbound_from`` (new connections
from one host: a one-way link), ``drop_tcp_to`` (one TCP port of another host), ``Lan.partition``
/ ``Lan.heal`` (everything between two sets),
``loss`` (``numgen random mod 100 < P drop``). Processes are paused, resumed and killed by
PID. ``Lan.close`` (also run by ``with``, on ``atexit`` and on SIGTERM of the test process)
stops every process it started by PID and deletes its namespaces and temp dirs.

Per-host Ray needs short socket paths (AF_UNIX, under 107 bytes): each host's TMPDIR is
``/tmp/l<pid><host>/t``.

Example::

    from tests.lan.harness import Lan, skip_reason

    with Lan(3, docker0=True) as lan:                 # 3 hosts, each with docker0 = 172.17.0.1
        for host in lan.hosts:                        # booted one after another
            host.start("--roles", "planner,cache")    # -> LanNode; cache store defaults to memory
        lan.wait_mesh()                               # every host lists every other as alive
        peers = lan.hosts[0].node.peers()             # [common_pb2.Peer] from ListPeers
        lan.hosts[2].drop_inbound_from(lan.hosts[1])  # h3 refuses connections h2 opens
        lan.partition(lan.hosts[:1], lan.hosts[1:]); lan.heal()
        lan.hosts[1].node.kill()                      # SIGKILL by PID
        out = lan.hosts[0].llmlab("peers", "--target", lan.hosts[0].target, "--json")

Tests need root (namespaces, nftables); ``skip_reason()`` says why they cannot run.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message

from llmlab_grpc.procs import NodeProcess, launch
from llmlab_grpc.proto.llmlab.v1 import common_pb2, node_pb2

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "lan"
PROBE = Path(__file__).resolve().parent / "probe.py"

LAN1 = "192.168.50."  # the LAN every host is on; hosts .11, .12, ...; the switch .254
LAN2 = "10.44.0."  # the second LAN, shared by some hosts only
DOCKER0 = "172.17.0.1/16"  # the same on every host, as Docker sets it up
GRPC_PORT = 50051
PEER_TIMEOUT_S = 3.5  # a node's default --peer-timeout
HEARTBEAT_S = 1.0  # a node's default --heartbeat-interval

R = TypeVar("R", bound=Message)


def skip_reason() -> str | None:
    """Why LAN tests cannot run here, or None when they can."""
    if sys.platform != "linux":
        return "LAN tests need Linux network namespaces"
    if os.geteuid() != 0:
        return "LAN tests need root (network namespaces, bridges, nftables); CI runs them as root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"LAN tests need the `{tool}` command: run `bash scripts/setup` (installs Debian's nftables)"
    return None


def sh(*cmd: str, input: str | None = None, check: bool = True, timeout: float = 20.0) -> str:
    """Run one admin command (``ip``, ``nft``); a failure names the command and its stderr."""
    done = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


class LanRpcError(Exception):
    """A call through the probe failed; ``code`` is the gRPC status name (e.g. ``UNAVAILABLE``)."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


class Probe:
    """A gRPC caller living in one namespace (see probe.py); calls are serialized by a lock."""

    def __init__(self, ns: str) -> None:
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(PROBE)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )

    def call(self, target: str, method: str, request: bytes, secret: str, timeout: float) -> bytes:
        line = json.dumps({"target": target, "method": method, "secret": secret, "timeout": timeout,
                           "request": base64.b64encode(request).decode()})
        with self._lock:
            assert self.process.stdin is not None and self.process.stdout is not None
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError("the LAN probe exited")
        out = json.loads(answer)
        if not out["ok"]:
            raise LanRpcError(out["code"], out["details"])
        return base64.b64decode(out["response"])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class LanNode:
    """One `llmlab node` process on a host. ``proc.pid`` is the node's own PID (``ip netns exec`` execs)."""

    host: Host
    name: str
    port: int
    proc: NodeProcess
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def target(self) -> str:
        """The address the test dials: the host's LAN address (not what the node printed)."""
        return f"{self.host.ip}:{self.port}"

    @property
    def listening_address(self) -> str:
        """The address in the node's ``listening on`` line."""
        return self.proc.address

    def call(self, method: str, request: Message, response_cls: type[R], timeout: float = 5.0,
             secret: str | None = None) -> R:
        return self.host.lan.call(self.target, method, request, response_cls, timeout=timeout, secret=secret)

    def info(self) -> common_pb2.NodeInfo:
        return self.call("/llmlab.v1.Node/GetInfo", node_pb2.GetInfoRequest(), node_pb2.GetInfoResponse).info

    def peers(self, timeout: float = 3.0) -> list[common_pb2.Peer]:
        """This node's peer table (empty when it does not answer)."""
        try:
            reply = self.call("/llmlab.v1.Node/ListPeers", node_pb2.ListPeersRequest(),
                              node_pb2.ListPeersResponse, timeout=timeout)
        except LanRpcError:
            return []
        return list(reply.peers)

    def peer_states(self) -> dict[str, str]:
        """name -> state ("alive", "suspect", "one-way", ...) of every row of the peer table."""
        return {p.info.name: common_pb2.PeerState.Name(p.state).removeprefix("PEER_STATE_").lower().replace("_", "-")
                for p in self.peers()}

    def alive_peers(self) -> set[str]:
        return {name for name, state in self.peer_states().items() if state == "alive"}

    def alive(self) -> bool:
        return self.proc.process.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the node's PID (SIGKILL, SIGSTOP, SIGCONT, SIGTERM)."""
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.process.wait(timeout=10)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, SIGKILL after ``timeout``; returns the exit code. A paused node is resumed first."""
        self.proc.send_signal(signal.SIGCONT)
        return self.proc.stop(signal.SIGTERM, timeout=timeout)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def log(self) -> str:
        """The node's stderr so far (logging goes there)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Host:
    """One host: a namespace with its interfaces, its own HOME/TMPDIR/LLMLAB_HOME and its nodes."""

    def __init__(self, lan: Lan, number: int) -> None:
        self.lan = lan
        self.number = number
        self.name = f"h{number}"
        self.ns = f"{lan.prefix}{self.name}"
        self.ip = f"{LAN1}{10 + number}"
        self.ip2 = ""  # on the second LAN, when the host is on it
        self.link_local = ""
        self.docker0 = False
        self.dir = Path(f"/tmp/l{os.getpid()}{lan.tag}{self.name}")  # short: Ray's socket paths live under it
        self.nodes: list[LanNode] = []
        self._faults = 0

    # ----- network -----
    def _create(self, docker0: bool) -> None:
        sh("ip", "netns", "add", self.ns)
        self.lan.created_ns.append(self.ns)
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        if docker0:  # before eth0: its lower interface index puts it first, the case that broke discovery
            self.add_docker0()
        self._plug("eth0", "br0", f"{self.ip}/24", f"{self.name}")
        nft = (f"table inet {self.lan.prefix} {{\n"
               "  chain input { type filter hook input priority 0; policy accept; }\n"
               "  chain output { type filter hook output priority 0; policy accept; }\n}\n")
        self.nft(nft)
        for sub in ("", "t", "home", "ll"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)

    def _plug(self, ifname: str, bridge: str, cidr: str, port: str) -> None:
        sw = self.lan.switch_ns
        sh("ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", self.ns)
        sh("ip", "-n", sw, "link", "set", port, "master", bridge, "up")
        sh("ip", "-n", self.ns, "addr", "add", cidr, "dev", ifname)
        sh("ip", "-n", self.ns, "link", "set", ifname, "up")

    def add_docker0(self) -> None:
        """A docker0 bridge with 172.17.0.1/16 and one running "container" (a veth), so it has carrier."""
        sh("ip", "-n", self.ns, "link", "add", "docker0", "type", "bridge")
        sh("ip", "-n", self.ns, "addr", "add", DOCKER0, "dev", "docker0")
        sh("ip", "-n", self.ns, "link", "add", "vethc0", "type", "veth", "peer", "name", "ctr0")
        sh("ip", "-n", self.ns, "link", "set", "vethc0", "master", "docker0", "up")
        sh("ip", "-n", self.ns, "link", "set", "ctr0", "up")
        sh("ip", "-n", self.ns, "link", "set", "docker0", "up")
        self.docker0 = True

    def add_second_lan(self) -> None:
        """eth1 on the second LAN (10.44.0.0/24), which only some hosts share."""
        self.lan.ensure_second_lan()
        self.ip2 = f"{LAN2}{10 + self.number}"
        self._plug("eth1", "br1", f"{self.ip2}/24", f"{self.name}b")

    def add_link_local(self) -> None:
        """A 169.254.50.N/16 address on eth0, as a host without DHCP gives itself."""
        self.link_local = f"169.254.50.{10 + self.number}"
        sh("ip", "-n", self.ns, "addr", "add", f"{self.link_local}/16", "dev", "eth0")

    def addresses(self) -> list[str]:
        """This host's own addresses on the LANs (not 172.17.0.1, which every host has)."""
        return [a for a in (self.ip, self.ip2, self.link_local) if a]

    def nft(self, script: str) -> None:
        sh("ip", "netns", "exec", self.ns, "nft", "-f", "-", input=script)

    def _rule(self, chain: str, rule: str) -> None:
        self.nft(f"add rule inet {self.lan.prefix} {chain} {rule}\n")
        self._faults += 1

    # ----- faults -----
    def drop_mdns(self) -> None:
        """No multicast DNS in or out (Wi-Fi client isolation, a firewall closing 5353/udp)."""
        for chain in ("input", "output"):
            self._rule(chain, "udp dport 5353 drop")
            self._rule(chain, "udp sport 5353 drop")

    def drop_inbound_from(self, other: Host) -> None:
        """Refuse every connection ``other`` opens to this host (TCP and UDP); the ones this host
        opens to ``other`` still work: a one-way link."""
        self._rule("input", f"ct state new ip saddr {{ {', '.join(other.addresses())} }} drop")

    def drop_all_with(self, others: Iterable[Host]) -> None:
        """Drop every packet to or from ``others`` (one side of a partition)."""
        addrs = [a for o in others for a in o.addresses()]
        if addrs:
            self._rule("input", f"ip saddr {{ {', '.join(addrs)} }} drop")
            self._rule("output", f"ip daddr {{ {', '.join(addrs)} }} drop")

    def drop_tcp_to(self, other: Host, port: int = GRPC_PORT) -> None:
        """This host's connections to ``other``'s TCP ``port`` go nowhere (a firewall on one port);
        mDNS and everything else still flow."""
        self._rule("output", f"ip daddr {{ {', '.join(other.addresses())} }} tcp dport {port} drop")

    def loss(self, percent: int) -> None:
        """Drop ``percent``% of the packets arriving from other hosts (the probe's are spared)."""
        if not 0 < percent <= 100:
            raise ValueError("loss percent must be 1-100")
        self._rule("input", f"ip saddr != {LAN1}254 ip saddr != {LAN2}254 numgen random mod 100 < {percent} drop")

    def heal(self) -> None:
        """Remove every fault rule of this host."""
        if self._faults:
            self.nft(f"flush chain inet {self.lan.prefix} input\nflush chain inet {self.lan.prefix} output\n")
            self._faults = 0

    # ----- processes -----
    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The host's environment: its own HOME, TMPDIR and LLMLAB_HOME; the mesh secret."""
        env = {
            "HOME": str(self.dir / "home"),
            "TMPDIR": str(self.dir / "t"),
            "LLMLAB_HOME": str(self.dir / "ll"),
            "LLMLAB_MESH_SECRET": self.lan.secret,
            "PYTHONUNBUFFERED": "1",
            # Ray's default, restated: a test process that ran Ray on loopback (ray_runtime's
            # keep_ray_on_loopback) has it at 0 in os.environ, which would pin the hosts' Rays to 127.0.0.1.
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
        }
        return {**env, **(extra or {})}

    def wrap(self, cmd: list[str]) -> list[str]:
        """``cmd`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.ns, *cmd]

    def start(self, *args: str, name: str = "", port: int = GRPC_PORT, env: dict[str, str] | None = None,
              wait: bool = True, timeout: float = 90.0) -> LanNode:
        """Start ``llmlab node --name NAME --port PORT *args`` with the node's defaults otherwise.

        The cache store is ``memory`` unless ``args`` or ``env`` say otherwise (Ray costs seconds
        and half a gigabyte per host). With ``wait`` (default) it returns once the node printed its
        ``listening`` line and fails the test, with the node's log, if it exits first.
        """
        name = name or f"lan{self.number}"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        log_path = ARTIFACTS / f"{self.lan.prefix}-{name}-{len(self.nodes)}.log"
        cmd = self.wrap([sys.executable, "-m", "llmlab_grpc", "node", "--name", name, "--port", str(port), *args])
        full_env = self.env({"LLMLAB_CACHE_STORE": "memory", **(env or {})})
        proc = launch(cmd, name, self.lan.secret, env=full_env, log_path=log_path, log_mode="w")
        node = LanNode(self, name, port, proc, log_path)
        self.nodes.append(node)
        self.lan.started.append(node)
        if wait and (not proc.listening.wait(timeout) or not proc.address):
            code = proc.process.poll()
            raise AssertionError(f"node {name} on {self.name} did not start (exit {code}):\n"
                                 f"{''.join(proc.output)}{node.log()[-3000:]}")
        return node

    @property
    def node(self) -> LanNode:
        """The node started last on this host."""
        if not self.nodes:
            raise LookupError(f"no node was started on {self.name}")
        return self.nodes[-1]

    @property
    def target(self) -> str:
        return self.node.target

    def run(self, cmd: list[str], timeout: float = 60.0, env: dict[str, str] | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a command inside this host (its namespace and environment); bounded by ``timeout``."""
        done = subprocess.run(self.wrap(cmd), capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **self.env(env)}, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise AssertionError(f"{cmd} on {self.name} exited {done.returncode}: {done.stderr}")
        return done

    def llmlab(self, *args: str, timeout: float = 60.0, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
        """Run the ``llmlab`` command on this host, e.g. ``host.llmlab("peers", "--target", ...)``."""
        return self.run([sys.executable, "-m", "llmlab_grpc", *args], timeout=timeout, env=env)


@dataclass(eq=False)
class Lan:
    """K hosts on one switch. Use as a context manager (or call ``close``)."""

    count: int = 3
    docker0: bool = False
    second_lan: Collection[int] = ()  # host numbers (1-based) also on the second LAN
    link_local: Collection[int] = ()  # host numbers with a 169.254.x.x address
    tag: str = ""  # a short extra prefix part when one process builds several LANs at once
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    hosts: list[Host] = field(default_factory=list, init=False)
    started: list[LanNode] = field(default_factory=list, init=False)
    created_ns: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        reason = skip_reason()
        if reason:
            raise RuntimeError(reason)
        self.prefix = f"llan{os.getpid()}{self.tag}"
        self.switch_ns = f"{self.prefix}sw"
        self._probes: dict[str, Probe] = {}
        self._second = False
        self._closed = False
        _LIVE.add(self)
        _exit_on_sigterm()
        try:
            sh("ip", "netns", "add", self.switch_ns)
            self.created_ns.append(self.switch_ns)
            self._bridge("br0", f"{LAN1}254/24")
            for _ in range(self.count):
                self.add_host()
        except BaseException:
            self.close()
            raise

    def _bridge(self, name: str, cidr: str) -> None:
        sw = self.switch_ns
        sh("ip", "-n", sw, "link", "set", "lo", "up")
        sh("ip", "-n", sw, "link", "add", name, "type", "bridge")
        sh("ip", "-n", sw, "addr", "add", cidr, "dev", name)
        sh("ip", "-n", sw, "link", "set", name, "up")

    def ensure_second_lan(self) -> None:
        if not self._second:
            self._bridge("br1", f"{LAN2}254/24")
            self._second = True

    def add_host(self, docker0: bool | None = None) -> Host:
        """One more host on the LAN (with this LAN's per-host options unless told otherwise)."""
        host = Host(self, len(self.hosts) + 1)
        self.hosts.append(host)
        host._create(self.docker0 if docker0 is None else docker0)
        if host.number in self.second_lan:
            host.add_second_lan()
        if host.number in self.link_local:
            host.add_link_local()
        return host

    def __enter__(self) -> Lan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- calls -----
    def call(self, target: str, method: str, request: Message, response_cls: type[R], timeout: float = 5.0,
             secret: str | None = None, via: Host | None = None) -> R:
        """One unary gRPC call to ``target`` from the switch (or from host ``via``); raises LanRpcError."""
        ns = via.ns if via is not None else self.switch_ns
        probe = self._probes.get(ns)
        if probe is None or probe.process.poll() is not None:
            probe = self._probes[ns] = Probe(ns)
        raw = probe.call(target, method, request.SerializeToString(),
                         self.secret if secret is None else secret, timeout)
        return response_cls.FromString(raw)

    # ----- the whole LAN -----
    def boot(self, *args: str, hosts: Iterable[Host] | None = None,
             per_host: Callable[[Host], list[str]] | None = None) -> list[LanNode]:
        """Start one node per host, one host after another (each waits for the previous one)."""
        return [h.start(*args, *(per_host(h) if per_host else [])) for h in (hosts or self.hosts)]

    def wait_mesh(self, hosts: Iterable[Host] | None = None, timeout: float = 30.0) -> float:
        """Until every given host's node lists every other one as alive; returns the seconds it took."""
        chosen = list(hosts or self.hosts)
        want = {h.node.name for h in chosen}
        return wait_for(lambda: all(h.node.alive_peers() >= want - {h.node.name} for h in chosen),
                        timeout, what=f"a full mesh of {sorted(want)}",
                        describe=lambda: {h.node.name: h.node.peer_states() for h in chosen})

    def partition(self, side_a: Iterable[Host], side_b: Iterable[Host]) -> None:
        """Drop everything between the two sets of hosts (both directions)."""
        a, b = list(side_a), list(side_b)
        for host in a:
            host.drop_all_with(b)
        for host in b:
            host.drop_all_with(a)

    def heal(self) -> None:
        """Remove every fault rule on every host."""
        for host in self.hosts:
            host.heal()

    def close(self) -> None:
        """Stop every node by PID, then delete the namespaces and temp dirs. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        for node in self.started:
            with contextlib.suppress(Exception):
                node.proc.send_signal(signal.SIGCONT)
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 8.0
        for node in self.started:
            try:
                node.proc.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.process.kill()
                node.proc.process.wait()
        for probe in self._probes.values():
            probe.close()
        for ns in reversed(self.created_ns):
            for pid in sh("ip", "netns", "pids", ns, check=False).split():
                # Only children of our own nodes can be left here (e.g. a Ray worker): all ours.
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)
        for host in self.hosts:
            shutil.rmtree(host.dir, ignore_errors=True)


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition",
             describe: Callable[[], Any] | None = None) -> float:
    """Poll ``predicate`` until truthy; returns the seconds it took or fails naming ``what``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    state = describe() if describe else None
    raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}; state: {state!r}")


_LIVE: set[Lan] = set()


def _close_all() -> None:
    for lan in list(_LIVE):
        with contextlib.suppress(Exception):
            lan.close()


atexit.register(_close_all)


def _exit_on_sigterm() -> None:
    """Turn a SIGTERM of the test process into SystemExit, so atexit clean-up runs (main thread only)."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
