"""Bridge parts in isolation: pairing and session tokens, dashboard links and sessions, the rate
limiter and its strike window, the wire format, cache-sync batching, the HTTP server's JSON
500, and membership's handling of mobile rows."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest
from starlette.routing import Route

from llmlab_grpc.bridge.access import LINK_TTL_S, SESSION_TTL_S, DashboardSessions, loopback_host_header
from llmlab_grpc.bridge.cache_sync import MAX_ENTRY_BYTES, CacheSync
from llmlab_grpc.bridge.http import HttpServer
from llmlab_grpc.bridge.pairing import PairingTokens, SessionTokens
from llmlab_grpc.bridge.protocol import ProtocolError, decode, encode
from llmlab_grpc.bridge.ratelimit import StrikeWindow, TokenBucket
from llmlab_grpc.mesh.membership import Membership
from llmlab_grpc.mesh.peers import PeerTable
from llmlab_grpc.proto.llmlab.v1 import bridge_pb2, common_pb2
from llmlab_grpc.tools.convert import from_struct, to_struct


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_pairing_tokens_rotate_and_expire() -> None:
    clock = Clock()
    tokens = PairingTokens(ttl_s=600, clock=clock)
    first, expires = tokens.current()
    assert expires == 1600 and tokens.valid(first)
    clock.now += 200
    assert tokens.current()[0] == first  # more than half its life left: still shown
    clock.now += 150
    second, _ = tokens.current()  # under half left: a fresh one, the old still valid
    assert second != first and tokens.valid(first) and tokens.valid(second)
    clock.now += 300
    assert not tokens.valid(first) and tokens.valid(second)
    assert not tokens.valid("") and not tokens.valid("guess")


def test_session_tokens_name_one_node_and_resist_tampering() -> None:
    tokens = SessionTokens("mesh-secret-1", "bridge-a")
    token = tokens.issue("mobile-1234")
    assert tokens.node_of(token) == "mobile-1234"
    assert SessionTokens("mesh-secret-1", "bridge-b").node_of(token) is None  # another bridge's key
    assert SessionTokens("other-secret", "bridge-a").node_of(token) is None
    body, _, mac = token.rpartition(".")
    forged = body.replace("mobile-1234", "mobile-9999") + "." + mac
    assert tokens.node_of(forged) is None
    expired = SessionTokens("mesh-secret-1", "bridge-a", ttl_s=-10).issue("mobile-1234")
    assert tokens.node_of(expired) is None
    assert tokens.node_of("not-a-session") is None


def test_token_bucket() -> None:
    clock = Clock(0.0)
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.1
    assert bucket.take() and not bucket.take()
    bucket.refund()
    assert bucket.take()


def test_strikes_are_kept_over_the_window_whatever_was_accepted_between() -> None:
    """A steady flooder just over the rate: every other message accepted used to wipe the count."""
    clock = Clock(0.0)
    bucket = TokenBucket(rate=20, burst=40, clock=clock)
    strikes = StrikeWindow(limit=50, window_s=60, clock=clock)
    refused = cut_off = 0
    for _ in range(40 * 60):  # 40 messages/s for up to a minute against 20/s
        clock.now += 1 / 40
        if not bucket.take():
            refused += 1
            if strikes.strike():
                cut_off = refused
                break
    assert cut_off == 50 and clock.now < 10  # the 50th refusal ends it, seconds in


def test_strikes_expire_after_the_window() -> None:
    clock = Clock(0.0)
    strikes = StrikeWindow(limit=3, window_s=10, clock=clock)
    assert not strikes.strike() and not strikes.strike()
    clock.now += 11  # the two old strikes fall out of the window
    assert not strikes.strike() and not strikes.strike()
    assert strikes.strike() and len(strikes) == 3


def test_dashboard_link_is_spent_once_and_buys_a_signed_session() -> None:
    clock = Clock(1_000_000.0)
    sessions = DashboardSessions("s3cret-mesh", "abcdef0123456789", clock=clock)
    token, expires = sessions.mint_link()
    assert expires == clock.now + LINK_TTL_S
    cookie = sessions.redeem(token)
    assert cookie is not None and sessions.valid(cookie)
    assert sessions.redeem(token) is None  # spent
    assert sessions.redeem("nope") is None and sessions.redeem("") is None
    late, _ = sessions.mint_link()
    clock.now += LINK_TTL_S + 1
    assert sessions.redeem(late) is None  # expired unused
    header = sessions.cookie_header(cookie, secure=False)
    assert header.startswith("llmlab_session_abcdef012345=") and "HttpOnly" in header
    assert "SameSite=Strict" in header and "Secure" not in header
    assert "; Secure" in sessions.cookie_header(cookie, secure=True)
    # Another mesh's key, a tampered expiry or MAC, an old cookie: refused.
    other = DashboardSessions("other-mesh", "abcdef0123456789", clock=clock)
    assert not other.valid(cookie)
    body, mac = cookie.rsplit(".", 1)
    assert not sessions.valid(f"{body}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}")
    assert not sessions.valid(cookie.replace("d1.", "d1.9", 1))
    assert sessions.valid(cookie)
    clock.now += SESSION_TTL_S
    assert not sessions.valid(cookie)


@pytest.mark.parametrize(("host", "ok"), [
    ("127.0.0.1:8080", True), ("localhost:8080", True), ("LOCALHOST:8080", True), ("[::1]:8080", True),
    ("127.9.9.9:8080", True), ("127.0.0.1", False), ("127.0.0.1:8081", False), ("bridge.example.com:8080", False),
    ("bridge.example.com", False), ("192.168.1.5:8080", False), ("localhost.evil.test:8080", False),
    ("", False), ("[::1", False), ("127.0.0.1:80:80", False),
])
def test_only_a_loopback_host_header_with_our_port_is_local(host: str, ok: bool) -> None:
    assert loopback_host_header(host, 8080) is ok


def test_wire_format_round_trip_and_refusals() -> None:
    envelope = bridge_pb2.BridgeEnvelope(id="5", task_assignment=bridge_pb2.TaskAssignment(
        task_id="t1", tool="http_fetch", arguments=to_struct({"url": "http://x", "n": 3}), deadline_unix_ms=42))
    text = encode(envelope)
    assert json.loads(text)["taskAssignment"]["deadlineUnixMs"] == "42"  # int64 as a string
    assert decode(text) == envelope
    assert from_struct(envelope.task_assignment.arguments) == {"url": "http://x", "n": 3}
    for raw, words in [("{", "not valid JSON"), ("3", "JSON object"), ('{"id": "1"}', "no message"),
                       ('{"hello": {"nope": 1}}', "nope"), ("[" * 100_000, "not valid JSON"),
                       ('{"heartbeat": {"currentTask": ' + "[" * 200 + "]" * 200 + "}}", "deeper than 64")]:
        with pytest.raises(ProtocolError) as refused:
            decode(raw)
        assert refused.value.code == "INVALID_ARGUMENT" and words in refused.value.message


class _Hub:
    on_paired: list = []
    sessions: dict = {}


def test_cache_sync_batches_fit_the_message_limit() -> None:
    sync = CacheSync(_Hub(), max_message_bytes=8192)  # type: ignore[arg-type]
    future = int(time.time() * 1000) + 60_000
    entries = [common_pb2.CacheEntry(key=f"k{i}", response="x" * 500, size_bytes=500, expires_unix_ms=future)
               for i in range(40)]
    batches = sync._batches(entries, ["gone"])
    assert sum(len(b.entries) for b in batches) == 40 and batches[0].deleted_keys == ["gone"]
    assert all(len(encode(bridge_pb2.BridgeEnvelope(cache_sync=b)).encode()) <= 8192 for b in batches)

    sync.on_put(common_pb2.CacheEntry(key="big", size_bytes=MAX_ENTRY_BYTES + 1, expires_unix_ms=future))
    sync.on_put(common_pb2.CacheEntry(key="old", expires_unix_ms=1))
    sync.on_put(common_pb2.CacheEntry(key="a", expires_unix_ms=future))
    sync.on_delete("a")
    sync.on_put(common_pb2.CacheEntry(key="b", expires_unix_ms=future))
    assert list(sync._puts) == ["b"] and list(sync._deletes) == ["a"]


class _Channels:
    def __init__(self) -> None:
        self.dropped: list[str] = []

    async def drop(self, address: str) -> None:
        self.dropped.append(address)


def _mobile(node_id: str, via: str) -> common_pb2.NodeInfo:
    return common_pb2.NodeInfo(node_id=node_id, name=node_id, kind=common_pb2.NODE_KIND_MOBILE, via_node_id=via)


async def test_membership_drops_mobile_rows_with_their_bridge() -> None:
    table = PeerTable("me")
    channels = _Channels()
    membership = Membership(lambda: common_pb2.NodeInfo(node_id="me", address="127.0.0.1:1"), table,
                            channels, seeds=[])  # type: ignore[arg-type]
    table.upsert(common_pb2.NodeInfo(node_id="bridge", address="127.0.0.1:2"), "static")
    table.upsert(common_pb2.NodeInfo(node_id="other", address="127.0.0.1:3"), "static")
    table.upsert(_mobile("m1", "bridge"), "bridge")
    table.upsert(_mobile("m2", "other"), "bridge")
    membership._drop_mobiles_of("bridge", keep={"m1"})
    assert "m1" in table
    await membership.left("bridge")
    assert "m1" not in table and "m2" in table and channels.dropped == ["127.0.0.1:2"]


async def test_an_unexpected_error_is_a_json_500_not_plain_text() -> None:
    async def boom(request: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    server = HttpServer("127.0.0.1", 0, routes=[Route("/boom", boom)])
    url = await server.start()
    try:
        def get() -> tuple[int, str, dict[str, object]]:
            try:
                urllib.request.urlopen(f"{url}/boom", timeout=10)
            except urllib.error.HTTPError as err:
                return err.code, err.headers["content-type"], json.loads(err.read())
            raise AssertionError("no error")

        status, kind, body = await asyncio.to_thread(get)
        assert status == 500 and kind == "application/json" and body["error"]["code"] == "internal_error"
    finally:
        await server.stop()
