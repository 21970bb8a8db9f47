"""Cache 2.0 controls without processes: namespaces, per-request TTL and max age, Cache-Control,
LiteLLM's body shape, API keys pinned to a namespace, per-namespace defaults, phone sync policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmlab_grpc.bridge.cache_sync import CacheSync, SyncPolicy
from llmlab_grpc.cache.entry import CacheEntry
from llmlab_grpc.cache.errors import InvalidParams
from llmlab_grpc.cache.keys import cache_key
from llmlab_grpc.cache.manager import CacheManager, EntryExtras
from llmlab_grpc.cache.stores import MemoryStore
from llmlab_grpc.config import NodeSettings
from llmlab_grpc.openai_api import translate
from llmlab_grpc.openai_api.auth import ApiAuth, add_key
from llmlab_grpc.openai_api.errors import ApiError
from llmlab_grpc.openai_api.schemas import ChatCompletionRequest
from llmlab_grpc.planner.cache_controls import resolve
from llmlab_grpc.proto.llmlab.v1 import common_pb2, planner_pb2
from tests.cache_support import FakeClock

MODEL = "m"


def cache(clock: FakeClock, **kwargs: object) -> CacheManager:
    return CacheManager(MemoryStore(), clock=clock, node_id="me", **kwargs)  # type: ignore[arg-type]


def ns(name: str) -> EntryExtras:
    return EntryExtras(namespace=name)


def test_one_prompt_in_two_namespaces_is_two_entries() -> None:
    c = cache(FakeClock())
    a = c.put("Tell me a joke", MODEL, "joke for a", extras=ns("a"))
    b = c.put("Tell me a joke", MODEL, "joke for b", extras=ns("b"))
    plain = c.put("Tell me a joke", MODEL, "joke for everyone")
    assert len({a.key, b.key, plain.key}) == 3 and len(c) == 3
    assert plain.key == cache_key("Tell me a joke", MODEL)  # the default namespace keeps the old keys
    assert (a.namespace, b.namespace, plain.namespace) == ("a", "b", "")
    assert c.get("Tell me a joke", MODEL, namespace="a") == "joke for a"
    assert c.get("Tell me a joke", MODEL, namespace="b") == "joke for b"
    assert c.get("Tell me a joke", MODEL) == "joke for everyone"
    assert c.get("Tell me a joke", MODEL, namespace="c") is None


def test_a_namespace_is_a_bounded_name() -> None:
    c = cache(FakeClock())
    for bad in ("has space", "x" * 129, "new\nline", "naïve"):
        with pytest.raises(InvalidParams):
            c.put("p", MODEL, "r", extras=ns(bad))


def test_a_replica_copy_keeps_its_namespace_and_extras() -> None:
    c = cache(FakeClock())
    entry = c.put("p", MODEL, "r", extras=EntryExtras(namespace="a", writer="alice", completion_tokens=3,
                                                       finish_reason="length", semantic_text="p",
                                                       embedding=b"\x00" * 16))
    other = cache(FakeClock())
    copy = other.put_entry(CacheEntry.from_proto(entry.to_proto()))
    assert copy is not None and copy.key == entry.key
    assert (copy.namespace, copy.writer, copy.completion_tokens, copy.finish_reason, copy.embedding) == (
        "a", "alice", 3, "length", b"\x00" * 16)


def test_ttl_per_put_per_namespace_and_default_with_an_injected_clock() -> None:
    clock = FakeClock()
    c = cache(clock, ttl_s=100, namespace_ttl_s={"short": 10})
    c.put("p", MODEL, "default")
    c.put("p", MODEL, "namespace default", extras=ns("short"))
    c.put("p", MODEL, "own ttl", ttl=5, extras=ns("other"))
    clock.advance(6)
    assert c.get("p", MODEL, namespace="other") is None
    assert c.get("p", MODEL, namespace="short") == "namespace default"
    clock.advance(5)
    assert c.get("p", MODEL, namespace="short") is None
    assert c.get("p", MODEL) == "default"
    clock.advance(90)
    assert c.get("p", MODEL) is None


def test_max_age_accepts_only_younger_entries_and_keeps_older_ones() -> None:
    clock = FakeClock()
    c = cache(clock)
    c.put("p", MODEL, "r")
    clock.advance(30)
    assert c.get("p", MODEL, max_age_s=60) == "r"
    assert c.get("p", MODEL, max_age_s=29) is None
    assert c.get("p", MODEL, max_age_s=0) is None
    assert c.get("p", MODEL) == "r"  # still there for callers without a max age
    assert c.get_stats()["hits"] == 2


def body(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields})


def test_litellm_cache_body_becomes_the_query_controls() -> None:
    query = translate.to_query(body(cache={"namespace": "team-a", "ttl": 60, "s-maxage": 30, "no-store": True}))
    assert query.cache.namespace == "team-a" and query.cache.ttl_s == 60 and query.cache.max_age_s == 30
    assert query.no_store and not query.no_cache and not query.cache.HasField("semantic")
    query = translate.to_query(body(cache={"no-cache": True, "semantic": True, "min_similarity": 0.95}))
    assert query.no_cache and query.cache.semantic and query.cache.min_similarity == pytest.approx(0.95)
    with pytest.raises(ValueError, match="ttl"):
        body(cache={"ttl": -1})
    with pytest.raises(ValueError, match="unknown"):
        body(cache={"unknown": 1})


@pytest.mark.parametrize(("header", "no_cache", "no_store", "max_age"), [
    ("no-cache", True, False, None),
    ("no-store", False, True, None),
    ("No-Store, max-age=120", False, True, 120.0),
    ("max-age=60, s-maxage=30", False, False, 30.0),
    ("private, max-age=0", False, False, 0.0),
    ("", False, False, None),
])
def test_cache_control_request_headers(header: str, no_cache: bool, no_store: bool, max_age: float | None) -> None:
    query = translate.to_query(body(), header)
    assert (query.no_cache, query.no_store) == (no_cache, no_store)
    assert (query.cache.max_age_s if query.cache.HasField("max_age_s") else None) == max_age


def test_a_malformed_max_age_is_a_400() -> None:
    for header in ("max-age=soon", "max-age=-1", "max-age=99999999999"):
        with pytest.raises(ApiError) as err:
            translate.to_query(body(), header)
        assert err.value.status == 400 and err.value.param == "Cache-Control"


def test_a_pinned_key_cannot_cross_into_another_namespace(tmp_path: Path) -> None:
    keys = tmp_path / "api_keys.json"
    alice = add_key(keys, "alice", namespace="team-a")
    bob = add_key(keys, "bob")
    auth = ApiAuth("mesh-secret-123", keys)
    reserved = auth.reserved_namespaces()
    assert reserved == {"team-a"}
    pinned = auth.principal(f"Bearer {alice}")
    assert (pinned.name, pinned.namespace, pinned.per_user) == ("alice", "team-a", True)
    query = translate.to_query(body(), "", pinned, reserved)
    assert query.cache.namespace == "team-a" and query.cache.writer == "alice"
    assert translate.to_query(body(cache={"namespace": "team-a"}), "", pinned, reserved).cache.namespace == "team-a"
    for other in ("team-b", ""):
        with pytest.raises(ApiError) as err:
            translate.to_query(body(cache={"namespace": other}), "", pinned, reserved)
        assert err.value.status == 403
    unpinned = auth.principal(f"Bearer {bob}")
    assert translate.to_query(body(cache={"namespace": "team-b"}), "", unpinned, reserved).cache.namespace == "team-b"
    with pytest.raises(ApiError) as err:  # another user's key cannot read team-a's entries
        translate.to_query(body(cache={"namespace": "team-a"}), "", unpinned, reserved)
    assert err.value.status == 403
    mesh = auth.principal("Bearer mesh-secret-123")
    query = translate.to_query(body(cache={"namespace": "team-a"}), "", mesh, reserved)
    assert query.cache.namespace == "team-a" and query.cache.writer == ""  # the mesh reaches every namespace


def test_namespace_defaults_come_from_config_and_requests_win() -> None:
    settings = NodeSettings(mesh_secret="x" * 12, semantic_min_similarity=0.92, cache_namespaces={
        "docs": {"ttl_s": 600, "max_age_s": 60, "semantic": True, "min_similarity": 0.97}})
    docs = resolve(planner_pb2.Query(cache=planner_pb2.CacheControl(namespace="docs")), settings)
    assert (docs.ttl_s, docs.max_age_s, docs.semantic, docs.min_similarity) == (600, 60, True, pytest.approx(0.97))
    own = resolve(planner_pb2.Query(cache=planner_pb2.CacheControl(namespace="docs", ttl_s=5, semantic=False)),
                  settings)
    assert (own.ttl_s, own.max_age_s, own.semantic) == (5, 60, False)
    other = resolve(planner_pb2.Query(cache=planner_pb2.CacheControl(namespace="other")), settings)
    assert (other.ttl_s, other.max_age_s, other.semantic, other.min_similarity) == (
        None, None, False, pytest.approx(0.92))
    with pytest.raises(ValueError, match="ttl"):
        resolve(planner_pb2.Query(cache=planner_pb2.CacheControl(ttl_s=-1)), settings)
    node_wide = settings.model_copy(update={"semantic_cache": True})
    assert resolve(planner_pb2.Query(), node_wide).semantic  # --semantic-cache: every query
    assert not resolve(planner_pb2.Query(cache=planner_pb2.CacheControl(semantic=False)), node_wide).semantic


def test_namespace_defaults_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMLAB_CACHE_NAMESPACES", '{"a": {"ttl_s": 30}}')
    monkeypatch.setenv("LLMLAB_BRIDGE_SYNC_NAMESPACES", "default,team-b")
    settings = NodeSettings(mesh_secret="x" * 12)
    assert settings.cache_namespaces["a"].ttl_s == 30
    assert settings.bridge_sync_namespaces == ["", "team-b"]
    assert CacheManager.from_settings(settings.model_copy(update={"cache_store": "memory"})).namespace_ttl_s == {
        "a": 30}


def entry(key: str, namespace: str = "", writer: str = "") -> common_pb2.CacheEntry:
    return common_pb2.CacheEntry(key=key, model=MODEL, prompt=key, response="r", namespace=namespace, writer=writer,
                                 embedding=[0.5] * 4, expires_unix_ms=2**62)


class _Hub:
    def __init__(self) -> None:
        self.on_paired: list[object] = []
        self.sessions: dict[str, object] = {}


def test_phone_sync_policy_keeps_private_and_unlisted_entries_off_phones() -> None:
    default = SyncPolicy()
    assert default.allows(entry("k1")) and default.allows(entry("k2", "team-a"))
    assert not default.allows(entry("k3", writer="alice"))  # another user's private entry
    listed = SyncPolicy(["", "shared"], private=False)
    assert listed.allows(entry("k1")) and listed.allows(entry("k2", "shared"))
    assert not listed.allows(entry("k3", "team-a"))
    assert SyncPolicy(["*"], private=True).allows(entry("k4", writer="alice"))
    sync = CacheSync(_Hub(), 64 * 1024, default)  # type: ignore[arg-type]
    sync.on_put(entry("mesh"))
    sync.on_put(entry("private", writer="alice"))
    assert list(sync._puts) == ["mesh"] and "private" in sync._deletes
    sent = sync._puts["mesh"]
    assert not sent.embedding and not sent.writer  # a phone gets neither the vector nor key names
