"""What a ``/v1/chat/completions`` body works out to, remembered for the same body sent again.

Why: validating a body (``routes._chat_request``, pydantic) and translating it to the
planner's ``Query`` (``translate.to_query``) cost ~70k instructions a request by callgrind,
a third of what the API's cache hit cost above a bare Starlette route, and a cache hit is by
nature a request sent before. Both are pure functions of the body, the ``Cache-Control``
header, the caller (``auth.Principal``) and the namespaces pinned to keys at the time: the
memo is keyed by all four, so the same inputs give the same validated request and query
without the work, and any change in one (a key re-pinned, a header added) is a new entry.
A request that fails either step is never kept (it fails the same way again, doing the work).

A hit gives the ``ChatCompletionRequest`` (read only, shared by the requests that sent the same
body) and the query as the bytes of an ``AskRequest`` holding it: each request parses its own
``Query`` from them, and the planner keys its own memo by the same bytes (``Planner._prelude``).

Bounded: ``MEMO_ENTRIES`` bodies of at most ``MEMO_MAX_BODY_BYTES`` each (with the header);
an entry holds its body, the validated request and the query (each about the body's size):
under 7 MiB in all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmlab_grpc.cache.wire import varint
from llmlab_grpc.memo import BoundedMemo

if TYPE_CHECKING:
    from llmlab_grpc.openai_api.auth import Principal
    from llmlab_grpc.openai_api.schemas import ChatCompletionRequest
    from llmlab_grpc.proto.llmlab.v1 import planner_pb2

MEMO_ENTRIES = 256
"""Request bodies remembered per API (least recently used out)."""
MEMO_MAX_BODY_BYTES = 8 * 1024
"""Longest body remembered; longer ones are validated and translated every time."""

MemoKey = tuple[bytes, str, "Principal", frozenset[str]]
"""(the body, the Cache-Control header, the caller, the namespaces pinned to keys)."""


def ask_request_bytes(query: planner_pb2.Query) -> bytes:
    """``AskRequest(query=query).SerializeToString()``, without the message."""
    encoded = query.SerializeToString()
    return b"\x0a" + varint(len(encoded)) + encoded


class RequestMemo(BoundedMemo[MemoKey, "tuple[ChatCompletionRequest, bytes]"]):
    """``MemoKey`` -> (validated request, ``AskRequest`` bytes), least recently used out."""

    def __init__(self, capacity: int = MEMO_ENTRIES, max_body_bytes: int = MEMO_MAX_BODY_BYTES) -> None:
        super().__init__(capacity, max_body_bytes)

    def put(self, key: MemoKey, chat: ChatCompletionRequest, asked: bytes) -> None:
        """Remember ``chat`` and ``asked`` for ``key`` (a body too long to remember is not kept)."""
        self._keep(key, (chat, asked), len(key[0]) + len(key[1]))
