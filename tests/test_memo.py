"""``BoundedMemo``, the hit paths' bounded memos (query facts, hit templates, request bodies)."""

from __future__ import annotations

from llmlab_grpc.memo import BoundedMemo
from llmlab_grpc.openai_api.request_memo import RequestMemo
from llmlab_grpc.planner.prelude import QueryMemo


class Texts(BoundedMemo[str, str]):
    def put(self, key: str, value: str) -> None:
        self._keep(key, value, len(key) + len(value))


def test_least_recently_used_goes_first_and_a_read_counts_as_use() -> None:
    memo = Texts(capacity=2, max_bytes=100)
    memo.put("a", "1")
    memo.put("b", "2")
    assert memo.get("a") == "1"  # "b" is now the least recently used
    memo.put("c", "3")
    assert (memo.get("b"), memo.get("a"), memo.get("c"), len(memo)) == (None, "1", "3", 2)


def test_an_entry_over_the_size_limit_or_a_zero_capacity_keeps_nothing() -> None:
    memo = Texts(capacity=4, max_bytes=5)
    memo.put("key", "too long")
    assert memo.get("key") is None and len(memo) == 0
    empty = Texts(capacity=0, max_bytes=100)
    empty.put("a", "1")
    assert len(empty) == 0


def test_the_owners_measure_their_entries() -> None:
    queries = QueryMemo(capacity=8, max_query_bytes=4)
    queries.put(b"12345", None)  # type: ignore[arg-type]  (the size is what is tested)
    assert len(queries) == 0
    requests = RequestMemo(capacity=8, max_body_bytes=10)
    requests.put((b"x" * 8, "yyy", None, frozenset()), None, b"")  # type: ignore[arg-type]
    assert len(requests) == 0
