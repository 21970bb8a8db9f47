"""The largest request a node takes, derived from the limits of what it stores and plans.

gRPC receives a whole message before any handler can look at it, so a limit checked in a
handler still lets every refused request cost its full size in buffers (a 16 MB query
refused for its 4 MiB limit grew a node by ~100 MiB over 20 asks: issue 16). The server's
receive limit is therefore the largest request that some handler could accept, and a
larger one is refused by gRPC itself with RESOURCE_EXHAUSTED before it is buffered.
Replies (screenshots, cache batches) keep the channel's larger limit.
"""

from __future__ import annotations

from typing import Protocol

MAX_QUERY_BYTES = 4 * 1024 * 1024
"""Largest query as a whole (text, every history turn, params), protobuf bytes: the model
never sees more (an llm node takes 200,000 prompt characters), and every byte is hashed."""

ENVELOPE_BYTES = 256 * 1024
"""Room beside the largest field for the rest of a request (ids, metadata, a tool's
results added to a prompt)."""


class StoredSizeLimits(Protocol):
    """The settings that bound what one cache entry holds."""

    cache_max_value_bytes: int
    cache_max_prompt_bytes: int
    cache_max_params_bytes: int


def max_request_bytes(limits: StoredSizeLimits) -> int:
    """The largest request message this node accepts: a whole query, or one whole cache entry."""
    entry = limits.cache_max_value_bytes + limits.cache_max_prompt_bytes + limits.cache_max_params_bytes
    return max(MAX_QUERY_BYTES, entry) + ENVELOPE_BYTES
