"""Search backends of the ``web_search`` tool: a local SQLite FTS5 index and SearxNG's JSON API.

Both answer ``await backend.search(query, max_results) -> list[SearchHit]`` and raise
``ToolFailure`` for what a caller should see, so the tool does not care which one runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SearchHit:
    """One search result."""

    title: str
    url: str
    snippet: str
    score: float | None
    source: str  # "local" or the SearxNG engine that found it


class SearchBackend(Protocol):
    """What the web_search tool needs from a backend."""

    name: str

    async def search(self, query: str, max_results: int) -> list[SearchHit]: ...
