"""``web_search``: find documents for a query with a pluggable backend.

``local`` (the embedded default) searches the SQLite FTS5 index that ``llmlab index``
fills; ``searxng`` asks a SearxNG instance at ``LLMLAB_SEARCH_URL``. With no backend
named, a configured search URL selects ``searxng`` and otherwise ``local`` is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from llmlab_grpc.tools.base import Tool
from llmlab_grpc.tools.search import SearchBackend
from llmlab_grpc.tools.search.local import LocalIndex
from llmlab_grpc.tools.search.searxng import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, SearxngBackend

MAX_QUERY_CHARS = 500
MAX_RESULTS = 20
BACKENDS = ("local", "searxng")


class WebSearchInput(BaseModel):
    """Arguments of ``web_search``."""

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="What to search for")
    max_results: int = Field(5, ge=1, le=MAX_RESULTS, description="How many results to return")


class WebSearchHit(BaseModel):
    """One result."""

    title: str
    url: str
    snippet: str = Field(description="Text around the matching words")
    score: float | None = Field(description="Relevance; higher is better (BM25 for the local index)")
    source: str = Field(description="'local' or the search engine that found it")


class WebSearchOutput(BaseModel):
    """What ``web_search`` returns."""

    query: str
    backend: str
    results: list[WebSearchHit]


def make_backend(backend: str = "", url: str = "", db: Path | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES) -> SearchBackend:
    """The backend named by the settings (see the module docstring for the default)."""
    chosen = backend or ("searxng" if url else "local")
    if chosen == "searxng":
        if not url:
            raise ValueError("the searxng search backend needs a URL: set LLMLAB_SEARCH_URL or --search-url")
        return SearxngBackend(url, timeout_s=timeout_s, retries=retries)
    if chosen == "local":
        return LocalIndex(db)
    raise ValueError(f"unknown search backend {chosen!r}; choose from {', '.join(BACKENDS)}")


class WebSearchTool(Tool):
    """Search documents: the local index by default, SearxNG when configured."""

    name = "web_search"
    description = (
        "Search for documents matching a query and return titles, URLs and snippets. Uses the node's search "
        "backend: a local full-text index (the default) or a SearxNG instance."
    )
    capabilities = ("search", "web")
    input_model = WebSearchInput
    output_model = WebSearchOutput
    timeout_s = 20.0

    def __init__(self, backend: SearchBackend | None = None) -> None:
        self.backend = backend if backend is not None else LocalIndex()
        worst = getattr(self.backend, "worst_case_s", None)
        if worst is not None:
            self.timeout_s = max(self.timeout_s, worst + 1.0)

    @classmethod
    def from_settings(cls, settings: Any) -> WebSearchTool:
        return cls(make_backend(
            backend=getattr(settings, "search_backend", ""),
            url=getattr(settings, "search_url", ""),
            db=getattr(settings, "search_db", None),
            timeout_s=getattr(settings, "search_timeout_s", DEFAULT_TIMEOUT_S),
            retries=getattr(settings, "search_retries", DEFAULT_RETRIES),
        ))

    async def execute(self, **kwargs: Any) -> dict[str, Any]:
        query, max_results = kwargs["query"], kwargs["max_results"]
        hits = await self.backend.search(query, max_results)
        return {
            "query": query,
            "backend": self.backend.name,
            "results": [
                {"title": h.title, "url": h.url, "snippet": h.snippet, "score": h.score, "source": h.source}
                for h in hits
            ],
        }
