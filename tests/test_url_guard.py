"""URL guard and egress proxy: the address policy, and that a refused address is never dialled.

No test here sends a packet beyond 127.0.0.0/8: names resolve through a test resolver
that knows a few ``.test`` names and otherwise accepts only numeric hosts
(``AI_NUMERICHOST``, no DNS query), and refused addresses are refused before a
connection is attempted, which the proxy's event log shows.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from types import SimpleNamespace

import pytest

from llmlab_grpc.mesh.endpoints import MeshEndpoints, local_addresses
from llmlab_grpc.ports import LocalNode
from llmlab_grpc.tools.base import ToolFailure
from llmlab_grpc.tools.builtin.egress_proxy import BACKGROUND_REFUSAL, EgressProxy
from llmlab_grpc.tools.builtin.url_guard import UrlGuard, UrlRefused, classify, parse_url
from tests.dns_support import FakeDns


@pytest.mark.parametrize(("address", "kind"), [
    ("93.184.216.34", None),
    ("2606:4700:4700::1111", None),
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.5", "private"),
    ("172.16.3.4", "private"),
    ("192.168.1.1", "private"),
    ("fd12:3456::1", "private"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("100.64.0.1", "shared (CGNAT)"),
    ("224.0.0.251", "multicast"),
    ("ff02::fb", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.10", "reserved"),
    ("2001:db8::1", "reserved"),
    ("169.254.169.254", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("::ffff:10.0.0.1", "private"),        # IPv4-mapped
    ("::ffff:127.0.0.1", "loopback"),
    ("64:ff9b::a00:1", "private"),         # NAT64 of 10.0.0.1
    ("2002:a9fe:a9fe::1", "cloud metadata"),  # 6to4 of 169.254.169.254
])
def test_classify(address: str, kind: str | None) -> None:
    assert classify(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(("url", "words"), [
    ("file:///etc/passwd", "file: URLs are not allowed"),
    ("javascript:alert(1)", "javascript: URLs are not allowed"),
    ("ftp://example.com/x", "ftp: URLs are not allowed"),
    ("data:text/html,<b>x</b>", "data: URLs are not allowed"),
    ("chrome://settings", "chrome: URLs are not allowed"),
    ("example.com", "without a scheme"),
    ("http:///nohost", "has no host"),
    ("http://example.com\\@127.0.0.1/", "backslashes"),
    ("http://exa mple.com/", "whitespace"),
    ("http://example.com:99999/", "not a valid URL"),
])
def test_parse_url_refusals(url: str, words: str) -> None:
    with pytest.raises(UrlRefused) as info:
        parse_url(url)
    assert info.value.code == "REFUSED"
    assert words in info.value.message


def test_parse_url_default_ports() -> None:
    assert parse_url("HTTPS://Example.COM./a").port == 443
    assert parse_url("http://example.com/a").port == 80
    assert parse_url("http://[::1]:8080/").host == "::1"


async def test_private_address_refused_with_the_flag_hint() -> None:
    guard = UrlGuard(resolver=FakeDns({}))
    with pytest.raises(UrlRefused) as info:
        await guard.check_url("http://10.0.0.5/admin")
    assert info.value.message == ("refused: 10.0.0.5 is a private address; "
                                  "start the node with --allow-private-urls to allow it")


async def test_every_resolved_address_is_checked() -> None:
    """A name answering with a public and a private address is refused (one bad answer is enough)."""
    dns = FakeDns({"mixed.test": ["93.184.216.34", "192.168.0.10"]})
    with pytest.raises(UrlRefused) as info:
        await UrlGuard(resolver=dns).check_url("http://mixed.test/")
    assert "mixed.test resolves to 192.168.0.10, a private address" in info.value.message
    assert dns.calls == ["mixed.test"]


async def test_numeric_host_forms_are_judged_by_their_address() -> None:
    guard = UrlGuard(resolver=FakeDns({}))
    for url in ("http://2130706433/", "http://0x7f.1/", "http://127.1/", "http://[::ffff:10.0.0.1]/"):
        with pytest.raises(UrlRefused):
            await guard.check_url(url)


async def test_allow_private_lifts_private_but_never_metadata() -> None:
    dns = FakeDns({"lan.test": ["192.168.1.20"], "meta.test": ["169.254.169.254"]})
    guard = UrlGuard(allow_private=True, resolver=dns)
    _, addresses = await guard.check_url("http://lan.test:8080/")
    assert addresses == [ipaddress.ip_address("192.168.1.20")]
    await guard.check_url("http://127.0.0.1/")
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://meta.test/"):
        with pytest.raises(UrlRefused) as info:
            await guard.check_url(url)
        assert "cloud metadata address; these are never allowed" in info.value.message


async def test_metadata_host_names_refused_without_asking_dns() -> None:
    dns = FakeDns({})
    guard = UrlGuard(allow_private=True, resolver=dns)
    for url in ("http://metadata.google.internal/computeMetadata/v1/", "http://METADATA.google.internal./"):
        with pytest.raises(UrlRefused, match="cloud metadata host"):
            await guard.check_url(url)
    assert dns.calls == []


async def test_unresolvable_name_is_a_failure_not_a_refusal() -> None:
    with pytest.raises(ToolFailure) as info:
        await UrlGuard(resolver=FakeDns({})).check_url("http://nowhere.test/")
    assert info.value.code == "FAILED"
    assert "could not resolve nowhere.test" in info.value.message


# ---- the egress proxy, spoken to as Chromium would: SOCKS5 with a host name ----

async def _socks_connect(port: int, host: str, target_port: int) -> tuple[int, asyncio.StreamReader,
                                                                          asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x05\x01\x00")
    assert await reader.readexactly(2) == b"\x05\x00"
    name = host.encode()
    writer.write(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", target_port))
    reply = await reader.readexactly(10)
    return reply[1], reader, writer


@pytest.fixture
async def echo_server() -> tuple[int, list[bytes]]:
    """A TCP server on 127.0.0.1 that answers every chunk with ``echo:`` + chunk."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(1024)
        received.append(data)
        writer.write(b"echo:" + data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], received
    server.close()
    await server.wait_closed()


async def test_proxy_tunnels_to_an_allowed_address(echo_server: tuple[int, list[bytes]]) -> None:
    port, received = echo_server
    proxy = EgressProxy(UrlGuard(allow_private=True, resolver=FakeDns({"site.test": ["127.0.0.1"]})))
    await proxy.start()
    try:
        code, reader, writer = await _socks_connect(proxy.page_port, "site.test", port)
        assert code == 0
        writer.write(b"hello")
        assert await reader.read(100) == b"echo:hello"
        writer.close()
        assert received == [b"hello"]
        assert proxy.events[-1].address == "127.0.0.1"
    finally:
        await proxy.close()


async def test_proxy_refuses_before_dialling() -> None:
    dns = FakeDns({"lan.test": ["10.1.2.3"]})
    proxy = EgressProxy(UrlGuard(allow_private=False, resolver=dns))
    await proxy.start()
    try:
        code, _, writer = await _socks_connect(proxy.page_port, "lan.test", 80)
        writer.close()
        assert code == 2  # connection not allowed by ruleset
        event = proxy.events[-1]
        assert event.address == ""  # nothing was dialled
        assert "10.1.2.3, a private address" in event.refused
        assert proxy.refusal_for("LAN.test") == event.refused
    finally:
        await proxy.close()


async def test_proxy_defeats_dns_rebinding(echo_server: tuple[int, list[bytes]]) -> None:
    """The name answers loopback to the URL check, then metadata: the proxy dials only what it checked."""
    port, received = echo_server
    dns = FakeDns({"rebind.test": [["127.0.0.1"], ["169.254.169.254"]]})
    guard = UrlGuard(allow_private=True, resolver=dns)
    await guard.check_url(f"http://rebind.test:{port}/")  # the check before navigation passes
    proxy = EgressProxy(guard)
    await proxy.start()
    try:
        code, _, writer = await _socks_connect(proxy.page_port, "rebind.test", port)
        writer.close()
        assert code == 2
        assert proxy.events[-1].address == ""
        assert "169.254.169.254, a cloud metadata address" in proxy.events[-1].refused
        assert received == []
    finally:
        await proxy.close()


async def test_browser_listener_refuses_everything(echo_server: tuple[int, list[bytes]]) -> None:
    port, received = echo_server
    dns = FakeDns({})
    proxy = EgressProxy(UrlGuard(allow_private=True, resolver=dns))
    await proxy.start()
    try:
        code, _, writer = await _socks_connect(proxy.browser_port, "127.0.0.1", port)
        writer.close()
        assert code == 2
        assert proxy.events[-1].refused == BACKGROUND_REFUSAL
        assert received == [] and dns.calls == []
    finally:
        await proxy.close()


# -- the mesh's own ports (issue 16: the browser tool read /api/pairing from loopback) ----------------------

class _Peers:
    """The part of a PeerTable that MeshEndpoints reads."""

    def __init__(self, *rows: tuple[str, str, str]) -> None:
        self.rows = [SimpleNamespace(node_id=name, info=SimpleNamespace(name=name, address=address, http_url=url,
                                                                        addresses=[address, "10.9.9.9:7000"]))
                     for name, address, url in rows]

    def all(self) -> list[SimpleNamespace]:
        return list(self.rows)


def _mesh(peers: _Peers) -> MeshEndpoints:
    me = LocalNode("me", "me", ["tools"], "mesh", 0, address="127.0.0.1:50051", addresses=["127.0.0.1:50051"],
                   http_url="http://127.0.0.1:8080")
    return MeshEndpoints(me, peers)  # type: ignore[arg-type]


async def test_the_mesh_own_ports_are_refused_even_with_private_urls_allowed() -> None:
    peers = _Peers(("local-peer", "127.0.0.1:50052", ""), ("lan-peer", "10.0.0.7:7000", "http://10.0.0.7:7080"))
    dns = FakeDns({"localhost": ["127.0.0.1"], "me.test": ["127.0.0.1", "::1"]})
    guard = UrlGuard(allow_private=True, resolver=dns, mesh=_mesh(peers))
    refused = [
        "http://127.0.0.1:8080/api/pairing",      # own HTTP port
        "http://localhost:8080/api/pairing",      # by name
        "http://127.0.0.2:8080/",                 # another loopback address
        "http://[::1]:8080/",                     # IPv6 loopback
        "http://[::ffff:127.0.0.1]:8080/",        # IPv4-mapped
        "http://0.0.0.0:8080/",                   # the wildcard reaches the node too
        "http://me.test:50051/",                  # own gRPC port
        "http://127.0.0.1:50052/",                # a peer on this machine
        "http://10.0.0.7:7000/",                  # a peer's gRPC address
        "http://10.0.0.7:7080/v1/models",         # a peer's HTTP address
        "http://10.9.9.9:7000/",                  # another address a peer announced
    ]
    for url in refused:
        with pytest.raises(UrlRefused, match="server of this llmlab mesh"):
            await guard.check_url(url)
    for ip in local_addresses():  # this machine's own LAN address on a node port
        if ip.version == 4 and not ip.is_loopback:
            with pytest.raises(UrlRefused, match="llmlab mesh"):
                await guard.check_url(f"http://{ip}:8080/")
    # Other ports stay as the private-address policy says.
    for url in ("http://127.0.0.1:9999/", "http://10.0.0.7:7001/", "http://10.0.0.8:7000/"):
        await guard.check_url(url)


async def test_a_peer_that_left_stays_protected() -> None:
    peers = _Peers(("gone", "10.0.0.9:7000", ""))
    mesh = _mesh(peers)
    guard = UrlGuard(allow_private=True, mesh=mesh)
    with pytest.raises(UrlRefused):
        await guard.check_url("http://10.0.0.9:7000/")
    peers.rows.clear()
    with pytest.raises(UrlRefused):
        await guard.check_url("http://10.0.0.9:7000/")


async def test_the_proxy_never_dials_a_mesh_port() -> None:
    guard = UrlGuard(allow_private=True, mesh=_mesh(_Peers()))
    proxy = EgressProxy(guard)
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.page_port)
        writer.write(b"\x05\x01\x00")
        assert await reader.readexactly(2) == b"\x05\x00"
        writer.write(b"\x05\x01\x00\x01" + bytes([127, 0, 0, 1]) + struct.pack("!H", 8080))
        reply = await reader.readexactly(10)
        assert reply[1] == 2  # connection not allowed by ruleset
        writer.close()
        assert proxy.events[-1].address == "" and "llmlab mesh" in proxy.events[-1].refused
    finally:
        await proxy.close()
