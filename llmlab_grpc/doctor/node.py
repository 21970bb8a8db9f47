"""Checks that ask a running node (and the nodes mDNS shows): reachability, links, ids, skew, Ray, models."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import grpc

from llmlab_grpc.doctor import Check, fail, ok, warn
from llmlab_grpc.doctor.scan import Seen
from llmlab_grpc.mesh.addresses import rank
from llmlab_grpc.mesh.auth import bearer, mesh_id
from llmlab_grpc.mesh.channels import CHANNEL_OPTIONS, TlsFiles
from llmlab_grpc.proto.llmlab.v1 import common_pb2, node_pb2, node_pb2_grpc

CLOCK_SKEW_LIMIT_MS = 2000


@dataclass
class Asker:
    """Blocking GetInfo/ListPeers to any address of the mesh, with the mesh secret."""

    secret: str
    tls: TlsFiles | None = None
    timeout_s: float = 2.0

    def _channel(self, address: str) -> grpc.Channel:
        if self.tls is None:
            return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        return grpc.secure_channel(address, self.tls.channel_credentials(), options=CHANNEL_OPTIONS)

    def info(self, address: str) -> tuple[node_pb2.GetInfoResponse, float]:
        """GetInfo and the local wall clock (ms) half-way through the call."""
        with self._channel(address) as channel:
            before = time.time()
            reply = node_pb2_grpc.NodeStub(channel).GetInfo(
                node_pb2.GetInfoRequest(), metadata=bearer(self.secret), timeout=self.timeout_s)
            return reply, (before + time.time()) / 2 * 1000

    def peers(self, address: str) -> node_pb2.ListPeersResponse:
        with self._channel(address) as channel:
            return node_pb2_grpc.NodeStub(channel).ListPeers(
                node_pb2.ListPeersRequest(), metadata=bearer(self.secret), timeout=self.timeout_s)


def classify(err: grpc.RpcError) -> tuple[str, str]:
    """(what went wrong, what to do) for a failed call, in words."""
    code = err.code() if hasattr(err, "code") else None
    details = (err.details() if hasattr(err, "details") else "") or ""
    low = details.lower()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return "UNAUTHENTICATED (it refused our mesh secret)", "use the same LLMLAB_MESH_SECRET on every node"
    if any(w in low for w in ("ssl", "tls", "handshake", "certificate")):
        return f"TLS mismatch ({details})", "use TLS on every node or on none, with certificates from one CA"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED or "timeout" in low or "timed out" in low:
        return "timeout (packets are dropped on the way)", "open the node's gRPC port (TCP) in the firewalls between"
    if "refused" in low:
        return "connection refused (nothing listens there)", "is the node running, on that port?"
    if "unreachable" in low or "no route" in low:
        return f"no route ({details})", "this host and that address are on different networks"
    return f"{code.name if code else 'ERROR'} ({details})", "see the node's log"


def _try(asker: Asker, addresses: list[str]) -> tuple[str, node_pb2.GetInfoResponse | None, str]:
    """The first address (in our rank order) that answers, or the last error."""
    error = "no address"
    for address in rank(addresses):
        try:
            reply, _ = asker.info(address)
            return address, reply, ""
        except grpc.RpcError as err:
            error = f"{address}: {classify(err)[0]}"
    return "", None, error


def node_checks(target: str, asker: Asker, seen: list[Seen] | None) -> list[Check]:
    """Every check that needs the node at ``target`` (``seen``: the mDNS scan, None when skipped)."""
    try:
        me, _ = asker.info(target)
    except grpc.RpcError as err:
        what, fix = classify(err)
        return [fail("node", f"{target} does not answer: {what}", fix)]
    info = me.info
    checks = [ok("node", f"{info.name} at {target}: version {info.version}, roles {','.join(info.roles)}")]
    try:
        table = asker.peers(target)
    except grpc.RpcError as err:
        what, fix = classify(err)
        return [*checks, fail("peers", f"ListPeers failed: {what}", fix)]
    peers = list(table.peers)
    checks.append(_announced(info))
    if seen is not None:
        checks.extend(_mdns(info, peers, seen, asker))
    checks.append(_one_way(peers))
    checks.append(_versions(info, peers))
    checks.append(_clock(target, info, peers, asker))
    checks.append(_ray(me))
    checks.append(_models(info, peers))
    return checks


def _announced(info: common_pb2.NodeInfo) -> Check:
    others = [a for a in info.addresses if a != info.address]
    extra = f"; also {', '.join(others)}" if others else ""
    host = info.address.rpartition(":")[0]
    if host.startswith("127.") and others:
        return warn("addresses", f"announces loopback {info.address} first{extra}",
                    "drop --advertise-host 127.0.0.1 (or --host 127.0.0.1) so LAN peers get a LAN address")
    if host.startswith("127."):
        return warn("addresses", f"bound to loopback only ({info.address}): no other host can reach it",
                    "start the node without --host (or with --host 0.0.0.0) to serve the LAN")
    return ok("addresses", f"announces {info.address}{extra}")


def _mdns(info: common_pb2.NodeInfo, peers: list[common_pb2.Peer], seen: list[Seen], asker: Asker) -> list[Check]:
    ours = mesh_id(asker.secret)
    same = [s for s in seen if s.announcement.mesh_id == ours]
    other = [s for s in seen if s.announcement.mesh_id != ours]
    checks: list[Check] = []

    unreachable = []
    for s in same:
        _, reply, error = _try(asker, list(s.announcement.addresses))
        if reply is None:
            unreachable.append(f"{s.announcement.name} ({error})")
    if unreachable:
        checks.append(fail("reachable", f"seen by mDNS but not reachable from here: {'; '.join(unreachable)}",
                           "open the gRPC port (TCP) between the hosts; check the error named for each"))
    else:
        checks.append(ok("reachable", f"every node of this mesh seen by mDNS answers ({len(same)} seen)"))

    if other:
        listed = ", ".join(f"{s.announcement.name} at {s.announcement.address}" for s in other)
        checks.append(warn("other-mesh", f"{len(other)} node(s) of another mesh seen: {listed}",
                           "if they should be in this mesh, they use another secret: give every node the same "
                           "LLMLAB_MESH_SECRET"))
    else:
        checks.append(ok("other-mesh", "no node of another mesh seen"))

    by_id: dict[str, set[str]] = defaultdict(set)
    for s in same:
        by_id[s.announcement.node_id].add(s.announcement.address)
    dupes = {k: v for k, v in by_id.items() if len(v) > 1}
    if dupes:
        listed = "; ".join(f"{k!r} at {', '.join(sorted(v))}" for k, v in dupes.items())
        checks.append(fail("duplicate-ids", f"one node id announced by several nodes: {listed}",
                           "give each node its own --name/--node-id (was a config or LLMLAB_HOME copied?)"))
    else:
        checks.append(ok("duplicate-ids", "every node id is announced once"))

    announced = {s.announcement.node_id for s in same}
    hidden = sorted(p.info.name for p in peers if p.info.kind == common_pb2.NODE_KIND_GRPC
                    and p.info.node_id not in announced)
    if not same:
        checks.append(fail("mdns-seen", "no node of this mesh heard by mDNS from here, not even "
                                        f"{info.name}", "multicast is blocked between the hosts (Wi-Fi client "
                                                        "isolation, 5353/udp closed): use --peer HOST:PORT seeds"))
    elif hidden:
        checks.append(warn("mdns-seen", f"peers known to {info.name} but not heard by mDNS here: "
                                        f"{', '.join(hidden)}",
                           "multicast does not cross between those hosts (client isolation, another subnet, "
                           "5353/udp closed): fine with --peer seeds; otherwise open 5353/udp"))
    else:
        checks.append(ok("mdns-seen", f"mDNS shows every peer of {info.name}"))
    return checks


def _one_way(peers: list[common_pb2.Peer]) -> Check:
    rows = [p for p in peers if p.state == common_pb2.PEER_STATE_ONE_WAY]
    if not rows:
        return ok("one-way", "no one-way link")
    listed = "; ".join(f"{p.info.name}: {p.detail}" for p in rows)
    return fail("one-way", listed, "a firewall lets connections through in one direction only: open the gRPC "
                                   "port (TCP) both ways between those hosts (run doctor on each)")


def _versions(info: common_pb2.NodeInfo, peers: list[common_pb2.Peer]) -> Check:
    versions: dict[str, list[str]] = defaultdict(list)
    for node in [info, *(p.info for p in peers if p.info.kind == common_pb2.NODE_KIND_GRPC)]:
        versions[node.version or "?"].append(node.name)
    if len(versions) > 1:
        listed = "; ".join(f"{v}: {', '.join(n)}" for v, n in sorted(versions.items()))
        return warn("versions", f"several versions in the mesh: {listed}", "upgrade every node to one version")
    return ok("versions", f"every node runs {next(iter(versions))}")


def _clock(target: str, info: common_pb2.NodeInfo, peers: list[common_pb2.Peer], asker: Asker) -> Check:
    skews: dict[str, float] = {}
    for name, address in [(info.name, target), *((p.info.name, p.info.address) for p in peers
                                                  if p.state == common_pb2.PEER_STATE_ALIVE and p.info.address)]:
        try:
            reply, local_ms = asker.info(address)
        except grpc.RpcError:
            continue
        if reply.now_unix_ms:
            skews[name] = reply.now_unix_ms - local_ms
    off = {n: s for n, s in skews.items() if abs(s) > CLOCK_SKEW_LIMIT_MS}
    if off:
        listed = ", ".join(f"{n} {s / 1000:+.1f} s" for n, s in off.items())
        return warn("clock", f"clocks differ from this host's by more than 2 s: {listed}",
                    "turn on time sync (NTP, e.g. systemd-timesyncd) on those hosts; cache expiry uses wall time")
    return ok("clock", f"clocks within 2 s of this host's ({len(skews)} node(s) checked)")


def _ray(me: node_pb2.GetInfoResponse) -> Check:
    info = me.info
    attached = me.ray if me.HasField("ray") else None
    if attached is not None and not attached.on_this_machine:
        host = info.address.rpartition(":")[0] or "<its LAN address>"
        return fail("ray", f"{info.name}'s Ray driver attached to Ray node {attached.ray_node_id[:8]} at "
                           f"{attached.ray_node_ip}, which is not on {info.name}'s machine: its model actors' "
                           "streams cross the network or never arrive",
                    f"on {info.name}'s machine run `ray start --address={attached.cluster_address} "
                    f"--node-ip-address={host}`, then restart the node (--advertise-host picks the address)")
    where = ""
    if attached is not None:
        cluster = "its own local Ray" if attached.own_cluster else f"cluster {attached.cluster_address}"
        where = (f"; its Ray driver is on Ray node {attached.ray_node_id[:8]} at {attached.ray_node_ip}, "
                 f"on its own machine ({cluster})")
    if "llm" in info.roles:
        if info.models:
            return ok("ray", f"{info.name} serves {', '.join(info.models)} on Ray{where}")
        return fail("ray", f"{info.name} has the llm role but serves no model{where}",
                    "read the node's log: Ray or the model did not start (llmlab node prints the cause)")
    if me.cache_stats.store == "ray":
        return ok("ray", f"{info.name} keeps its cache in Ray's object store{where}")
    return ok("ray", f"{info.name} does not use Ray (no llm role, cache in memory)")


def _models(info: common_pb2.NodeInfo, peers: list[common_pb2.Peer]) -> Check:
    served: dict[str, list[str]] = defaultdict(list)
    for node in [info, *(p.info for p in peers if p.state == common_pb2.PEER_STATE_ALIVE)]:
        for model in node.models:
            served[model].append(node.name)
    if not served:
        return warn("models", "no node in the mesh serves a model",
                    "start a node with the llm role (llmlab node --roles ...,llm)")
    return ok("models", "; ".join(f"{m} on {', '.join(n)}" for m, n in sorted(served.items())))
