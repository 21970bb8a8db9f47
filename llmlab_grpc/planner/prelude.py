"""What the planner works out from a query's bytes alone, remembered for a query asked again.

Before a query reaches the cache the planner validates it, hashes it (``query_sha256``),
cuts its preview, applies the default sampling and runs the deterministic rules: each a
pure function of the query, and together most of the Python a cache hit costs. A cache hit
is by nature a question asked before, so the result is kept in a small LRU keyed by the
query's deterministic encoding: the same bytes always gave the same result, so asking
again skips the work without changing any answer. What depends on the node rather than the
query (its settings, its models, the cache itself, the caller's credentials) is not kept and
is read on every call.

Bounded twice: ``MEMO_ENTRIES`` queries, and only queries of at most ``MEMO_MAX_QUERY_BYTES``
encoded. An entry holds its key, the task's head (the query's preview and ~100 bytes more), the
stripped text and the parameters: at most ~8 KiB, ~4 MiB a memo. A planner keeps two (by the
query's encoding, and by the ``AskRequest``'s bytes, whose entries share their ``Prelude``), so
under ~8 MiB in all. A query that fails validation is never kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmlab_grpc.memo import BoundedMemo
from llmlab_grpc.planner.rules import RouteHints
from llmlab_grpc.proto.llmlab.v1 import common_pb2

MEMO_ENTRIES = 512
"""Queries remembered per planner (least recently used out)."""
MEMO_MAX_QUERY_BYTES = 2048
"""Longest query (deterministic encoding) remembered; longer ones are worked out every time."""


@dataclass(frozen=True, slots=True)
class Prelude:
    """A valid query's pure facts. ``params`` is shared by every ask of the same query: readers
    copy it (a new message built from it), never write to it."""

    task_head: bytes
    """A running ``Task`` of this query on this planner, encoded: its preview (``tasks.preview_query``),
    ``query_sha256``, ``query_truncated``, status and planner node; a new task is parsed from it,
    then given its own id and time."""
    text: str
    """The query text, stripped."""
    params: common_pb2.GenerationParams
    """The parameters with the planner's default sampling (``effective_params``)."""
    params_raw: bytes
    """``params``' deterministic encoding (what the cache key is made from)."""
    hints: RouteHints | None
    """The rules' verdict on ``text`` when they were run and matched no tool (else None: the
    general path runs them itself)."""
    lone_turn: bool
    """Whether the query has no history: its one user turn is the whole conversation."""
    hit_path: bool
    """Whether the plan is sure to be one plain generation the cache may answer: the planner's
    hit path (``Planner._answer_from_cache``) may answer it without a workflow."""


class QueryMemo(BoundedMemo[bytes, Prelude]):
    """encoded query -> ``Prelude``, at most ``capacity`` of them, least recently used out."""

    def __init__(self, capacity: int = MEMO_ENTRIES, max_query_bytes: int = MEMO_MAX_QUERY_BYTES) -> None:
        super().__init__(capacity, max_query_bytes)

    def put(self, raw: bytes, prelude: Prelude) -> None:
        """Remember ``prelude`` for ``raw`` (a query too long to remember is not kept)."""
        self._keep(raw, prelude, len(raw))

    def __len__(self) -> int:
        return len(self._kept)
