"""Optional TLS: nodes with a CA-signed certificate form a mesh over mTLS; plaintext clients fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from tests.helpers import wait_until


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and one certificate for 127.0.0.1 signed by it (used by every node and the client)."""
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=llmlab test CA",
        cwd=d,
    )
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "node.key",
        "-out",
        "node.csr",
        "-subj",
        "/CN=llmlab node",
        cwd=d,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "node.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        cwd=d,
    )
    return d


def test_mtls_mesh(node_factory, secret, pki: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tls = ["--tls-cert", str(pki / "node.pem"), "--tls-key", str(pki / "node.key"), "--tls-ca", str(pki / "ca.pem")]
    a = node_factory("tls-a", "--roles", "cache,replica", "--no-mdns", *tls)
    node_factory("tls-b", "--roles", "cache,replica", "--no-mdns", "--peer", a.address, *tls)

    def peers_over_tls() -> set[str]:
        out = subprocess.run(
            [sys.executable, "-m", "llmlab_grpc", "peers", "--json", "--target", a.address, "--secret", secret, *tls],
            capture_output=True,
            text=True,
            timeout=30,
            env={"LLMLAB_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        )
        return {r["name"] for r in json.loads(out.stdout)} if out.returncode == 0 else set()

    wait_until(lambda: peers_over_tls() == {"tls-a", "tls-b"}, 20, what="the mTLS peers to see each other")

    # A plaintext client cannot talk to a TLS node.
    with grpc.insecure_channel(a.address) as channel:
        from llmlab_grpc.mesh.auth import bearer
        from llmlab_grpc.proto.llmlab.v1 import node_pb2, node_pb2_grpc

        with pytest.raises(grpc.RpcError) as err:
            node_pb2_grpc.NodeStub(channel).GetInfo(node_pb2.GetInfoRequest(), metadata=bearer(secret), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    # A TLS client without a client certificate is refused by mTLS.
    creds = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes())
    with grpc.secure_channel(a.address, creds) as channel, pytest.raises(grpc.RpcError) as err2:
        node_pb2_grpc.NodeStub(channel).GetInfo(node_pb2.GetInfoRequest(), metadata=bearer(secret), timeout=5)
    assert err2.value.code() == grpc.StatusCode.UNAVAILABLE
