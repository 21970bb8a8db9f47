"""The ``searxng`` backend: a SearxNG instance's JSON API over HTTP (``LLMLAB_SEARCH_URL``).

``GET {url}/search?q=...&format=json`` answers ``{"query", "results": [{"url", "title",
"content", "engine", "score"}, ...], ...}``. Connection errors, timeouts, 429 and 5xx are
retried with a short backoff; other answers fail at once with the reason.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from llmlab_grpc import __version__
from llmlab_grpc.tools.base import ToolFailure
from llmlab_grpc.tools.search import SearchHit

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_RETRIES = 2
BACKOFF_S = 0.25
MAX_SNIPPET_CHARS = 500
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def search_endpoint(base_url: str) -> str:
    """``http://host:8888`` and ``http://host:8888/search`` both mean the same endpoint."""
    url = base_url.rstrip("/")
    return url if url.endswith("/search") else f"{url}/search"


class SearxngBackend:
    """Client of one SearxNG instance."""

    name = "searxng"

    def __init__(self, base_url: str, timeout_s: float = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"search URL {base_url!r} must start with http:// or https://")
        self.endpoint = search_endpoint(base_url)
        self.timeout_s = timeout_s
        self.retries = max(0, retries)

    @property
    def worst_case_s(self) -> float:
        """Longest a search can take with every retry timing out."""
        return (self.retries + 1) * self.timeout_s + sum(BACKOFF_S * 2.0**i for i in range(self.retries))

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        data = await self._get({"q": query, "format": "json"})
        results = data.get("results")
        if not isinstance(results, list):
            raise ToolFailure("FAILED", f"{self.endpoint} answered JSON without a 'results' list")
        hits = []
        for item in results:
            if not isinstance(item, dict) or not item.get("url"):
                continue
            score = item.get("score")
            hits.append(SearchHit(
                title=str(item.get("title") or item["url"]),
                url=str(item["url"]),
                snippet=" ".join(str(item.get("content") or "").split())[:MAX_SNIPPET_CHARS],
                score=float(score) if isinstance(score, int | float) else None,
                source=str(item.get("engine") or "searxng"),
            ))
            if len(hits) >= max_results:
                break
        return hits

    async def _get(self, params: dict[str, str]) -> dict[str, Any]:
        last = ""
        headers = {"Accept": "application/json", "User-Agent": f"llmlab/{__version__}"}
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=headers, follow_redirects=True) as client:
            for attempt in range(self.retries + 1):
                if attempt:
                    await asyncio.sleep(BACKOFF_S * 2 ** (attempt - 1))
                try:
                    response = await client.get(self.endpoint, params=params)
                except httpx.TimeoutException:
                    last = f"no answer within {self.timeout_s:g} s"
                    continue
                except httpx.TransportError as exc:
                    last = f"cannot connect ({type(exc).__name__}: {exc})"
                    continue
                if response.status_code in _RETRY_STATUS:
                    last = f"HTTP {response.status_code}"
                    continue
                if response.status_code == 403:
                    raise ToolFailure("FAILED", f"{self.endpoint} refused format=json (HTTP 403): enable 'json' "
                                                "under search.formats in the SearxNG settings.yml")
                if response.status_code != 200:
                    raise ToolFailure("FAILED", f"{self.endpoint} answered HTTP {response.status_code}")
                try:
                    data = response.json()
                except ValueError:
                    raise ToolFailure("FAILED", f"{self.endpoint} did not answer JSON") from None
                if not isinstance(data, dict):
                    raise ToolFailure("FAILED", f"{self.endpoint} answered JSON that is not an object")
                return data
        tries = self.retries + 1
        raise ToolFailure("FAILED", f"SearxNG at {self.endpoint} failed after {tries} attempt(s): {last}")
