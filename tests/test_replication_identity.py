"""Under mTLS with a certificate per node, a replica write may only speak for the node its certificate names."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from llmlab_grpc.cache import CacheManager, cache_key
from llmlab_grpc.cache.keys import checksum
from llmlab_grpc.cache.stores import MemoryStore
from llmlab_grpc.mesh.channels import ChannelPool, TlsFiles
from llmlab_grpc.mesh.identity import impersonation
from llmlab_grpc.mesh.peers import PeerTable
from llmlab_grpc.proto.llmlab.v1 import common_pb2, replica_pb2, replica_pb2_grpc
from llmlab_grpc.replication import Replicator
from llmlab_grpc.replication.service import ReplicaService

MODEL = "smollm2-135m"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and one certificate per node (CN = node id) for 127.0.0.1."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=llmlab test CA", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    for node in ("n1", "n2", "n3"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{node}.key", "-out", f"{node}.csr",
                 "-subj", f"/CN={node}", cwd=d)
        _openssl("x509", "-req", "-in", f"{node}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{node}.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    return d


def test_the_rule() -> None:
    assert impersonation(set(), "n1", ["n1", "n3"]) == ""  # no mTLS: only the claim
    assert impersonation({"n1", "127.0.0.1"}, "n1", ["n1", "n3"]) == ""
    assert "names node n3" in impersonation({"n3"}, "n1", ["n1", "n3"])
    assert impersonation({"llmlab node"}, "n1", ["n1", "n3"]) == ""  # a shared certificate names no node


@pytest.fixture
async def served(pki: Path) -> AsyncIterator[tuple[str, Replicator]]:
    peers = PeerTable("n2")
    for node in ("n1", "n3"):
        peers.upsert(common_pb2.NodeInfo(node_id=node, name=node, address="127.0.0.1:9", roles=["cache", "replica"]),
                     "static")
    replicator = Replicator(CacheManager(MemoryStore(), node_id="n2"), "n2", peers, ChannelPool("secret"),
                            replica_count=0)
    server = grpc.aio.server()
    replica_pb2_grpc.add_ReplicaServicer_to_server(ReplicaService(replicator), server)
    tls = TlsFiles(pki / "n2.pem", pki / "n2.key", pki / "ca.pem")
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials())
    await server.start()
    yield f"127.0.0.1:{port}", replicator
    await asyncio.wait_for(server.stop(None), 30)


async def test_a_node_may_not_store_as_another(pki: Path, served: tuple[str, Replicator]) -> None:
    address, replicator = served
    key = cache_key("p", MODEL)
    entry = common_pb2.CacheEntry(key=key, model=MODEL, prompt="p", response="r", created_unix_ms=1,
                                  expires_unix_ms=4_000_000_000_000, size_bytes=1, checksum=checksum("r"),
                                  primary_node_id="n1")
    request = replica_pb2.StoreRequest(entry=entry, sender_node_id="n1")
    as_n3 = TlsFiles(pki / "n3.pem", pki / "n3.key", pki / "ca.pem").channel_credentials()
    async with grpc.aio.secure_channel(address, as_n3) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await replica_pb2_grpc.ReplicaStub(channel).Store(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "names node n3" in (err.value.details() or "")
    assert replicator.manager.get_entry(key) is None
    as_n1 = TlsFiles(pki / "n1.pem", pki / "n1.key", pki / "ca.pem").channel_credentials()
    async with grpc.aio.secure_channel(address, as_n1) as channel:
        reply = await replica_pb2_grpc.ReplicaStub(channel).Store(request, timeout=10)
    assert reply.accepted and replicator.manager.get_entry(key) is not None
