"""web_search: the local FTS5 index, and SearxNG's JSON API served by a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

from llmlab_grpc.tools.base import InvalidArguments
from llmlab_grpc.tools.builtin.web_search import WebSearchTool, make_backend
from llmlab_grpc.tools.search import local as local_mod
from llmlab_grpc.tools.search.local import LocalIndex, fts_query, sample_corpus
from llmlab_grpc.tools.search.searxng import SearxngBackend, search_endpoint

# --- local index ------------------------------------------------------------------------------


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "ray.md").write_text("# Ray actors\n\nAn actor keeps state in a worker process of the cluster.\n")
    (root / "grpc.txt").write_text("gRPC deadlines\nA deadline bounds how long a call may take before it fails.\n")
    (root / "sub" / "page.html").write_text(
        "<html><head><title>Zeroconf page</title><script>var secretword = 1;</script></head>"
        "<body><h1>Zeroconf</h1><p>Multicast DNS finds peers on the local network.</p></body></html>"
    )
    (root / "notes.bin").write_bytes(b"\x00ignored: not a document type")
    (root / ".hidden.md").write_text("# hidden\nnever indexed\n")
    return root


async def test_index_and_search_ranks_and_snippets(tmp_path: Path, docs: Path) -> None:
    index = LocalIndex(tmp_path / "search.db")
    report = index.index(docs)
    assert (report.added, report.updated, report.unchanged, report.documents) == (3, 0, 0, 3)
    hits = await index.search("how do actors keep state?", 5)
    assert hits[0].title == "Ray actors"
    assert hits[0].url == (docs / "ray.md").resolve().as_uri()
    assert "**actor**" in hits[0].snippet
    assert hits[0].source == "local" and hits[0].score is not None and hits[0].score > 0
    html = await index.search("multicast peers", 5)
    assert html[0].title == "Zeroconf page"
    assert await index.search("secretword", 5) == []  # script content is not text
    assert await index.search("hidden", 5) == []


async def test_reindex_updates_changed_and_drops_deleted(tmp_path: Path, docs: Path) -> None:
    index = LocalIndex(tmp_path / "search.db")
    index.index(docs)
    (docs / "grpc.txt").write_text("gRPC retries\nRetry UNAVAILABLE calls with backoff.\n")
    (docs / "sub" / "page.html").unlink()
    report = index.index(docs)
    assert (report.added, report.updated, report.unchanged, report.removed) == (0, 1, 1, 1)
    assert [h.title for h in await index.search("backoff", 5)] == ["gRPC retries"]
    assert await index.search("deadline", 5) == []
    assert await index.search("multicast", 5) == []


def test_large_files_are_skipped(tmp_path: Path, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_mod, "MAX_FILE_BYTES", 60)
    report = LocalIndex(tmp_path / "search.db").index(docs)
    assert report.skipped >= 1 and report.added < 3


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LocalIndex(tmp_path / "search.db").index(tmp_path / "nope")


def test_user_words_never_break_fts_syntax() -> None:
    assert fts_query('what is "NEAR" * -x OR (y') == '"near" OR "x" OR "y"'
    assert fts_query("what is it") == '"what" OR "is" OR "it"'  # only stop words: keep them
    assert fts_query("?!") == ""


async def test_query_without_words_is_an_error_result(tmp_path: Path) -> None:
    tool = WebSearchTool(LocalIndex(tmp_path / "search.db"))
    outcome = await tool.run({"query": "?!"})
    assert outcome.error is not None and outcome.error.code == "INVALID_ARGUMENT"


async def test_empty_index_gets_the_sample_corpus(tmp_path: Path) -> None:
    index = LocalIndex(tmp_path / "fresh.db")
    hits = await index.search("rendezvous hashing replicas", 3)
    assert hits[0].title == "Rendezvous hashing for replica placement"
    assert index.count() == len([p for p in sample_corpus().iterdir() if p.suffix in (".md", ".txt", ".html")])


async def test_tool_output_shape_and_limits(tmp_path: Path, docs: Path) -> None:
    index = LocalIndex(tmp_path / "search.db")
    index.index(docs)
    tool = WebSearchTool(index)
    outcome = await tool.run({"query": "actor deadline multicast", "max_results": 2})
    assert outcome.ok
    assert outcome.result["backend"] == "local" and len(outcome.result["results"]) == 2
    assert set(outcome.result["results"][0]) == {"title", "url", "snippet", "score", "source"}
    for bad in ({"query": ""}, {"query": "x", "max_results": 0}, {"query": "x", "max_results": 21}, {}):
        with pytest.raises(InvalidArguments):
            await tool.run(bad)


def test_backend_selection() -> None:
    assert make_backend().name == "local"
    assert make_backend(url="http://127.0.0.1:9").name == "searxng"
    assert make_backend("local", url="http://127.0.0.1:9").name == "local"
    with pytest.raises(ValueError, match="LLMLAB_SEARCH_URL"):
        make_backend("searxng")
    with pytest.raises(ValueError, match="unknown search backend"):
        make_backend("bing")
    settings = SimpleNamespace(search_backend="", search_url="http://127.0.0.1:9/search", search_db=None,
                               search_timeout_s=1.0, search_retries=0)
    tool = WebSearchTool.from_settings(settings)
    assert isinstance(tool.backend, SearxngBackend) and tool.backend.endpoint == "http://127.0.0.1:9/search"
    assert search_endpoint("http://h:8888/") == "http://h:8888/search"


# --- SearxNG JSON API on 127.0.0.1 ------------------------------------------------------------


@dataclass
class SearxState:
    """Behaviour of the local SearxNG-compatible server."""

    fail_first: int = 0  # answer 503 to this many requests first
    delay_s: float = 0.0
    body: str | None = None  # raw body instead of JSON
    status: int = 200
    requests: list[dict[str, list[str]]] = field(default_factory=list)


def searx_answer(query: str) -> dict:
    """The shape SearxNG's /search?format=json returns (fields the client uses plus the usual others)."""
    return {
        "query": query,
        "number_of_results": 0,
        "results": [
            {"url": "https://grpc.io/docs/what-is-grpc/", "title": "Introduction to gRPC",
             "content": f"An overview of gRPC ... {query}", "engine": "duckduckgo", "engines": ["duckduckgo"],
             "parsed_url": ["https", "grpc.io", "/docs/what-is-grpc/", "", "", ""], "template": "default.html",
             "positions": [1], "score": 2.5, "category": "general"},
            {"url": "https://docs.ray.io/", "title": "Ray documentation", "content": "Ray is a unified framework",
             "engine": "brave", "engines": ["brave"], "positions": [2], "score": 1.0, "category": "general"},
            {"url": "https://example.org/3", "title": "", "content": None, "engine": "wikipedia", "score": 0.5},
        ],
        "answers": [], "corrections": [], "infoboxes": [], "suggestions": [], "unresponsive_engines": [],
    }


@pytest.fixture
def searx() -> Iterator[tuple[str, SearxState]]:
    state = SearxState()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return None

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            params = parse_qs(parts.query)
            state.requests.append(params)
            if state.delay_s:
                time.sleep(state.delay_s)
            if parts.path != "/search":
                self.send_error(404)
                return
            if state.fail_first > 0:
                state.fail_first -= 1
                self.send_error(503, "engines overloaded")
                return
            if params.get("format") != ["json"]:
                self.send_error(403)  # what SearxNG does when json is not enabled
                return
            body = state.body if state.body is not None else json.dumps(searx_answer(params["q"][0]))
            payload = body.encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


async def test_searxng_results(searx: tuple[str, SearxState]) -> None:
    url, state = searx
    tool = WebSearchTool(SearxngBackend(url, timeout_s=2.0, retries=0))
    outcome = await tool.run({"query": "what is grpc", "max_results": 2})
    assert outcome.ok, outcome.error
    assert state.requests[-1]["q"] == ["what is grpc"] and state.requests[-1]["format"] == ["json"]
    assert outcome.result["backend"] == "searxng"
    results = outcome.result["results"]
    assert [r["url"] for r in results] == ["https://grpc.io/docs/what-is-grpc/", "https://docs.ray.io/"]
    assert results[0] == {"title": "Introduction to gRPC", "url": "https://grpc.io/docs/what-is-grpc/",
                          "snippet": "An overview of gRPC ... what is grpc", "score": 2.5, "source": "duckduckgo"}
    hits = await SearxngBackend(url + "/search", timeout_s=2.0).search("x", 10)
    assert hits[2].title == "https://example.org/3" and hits[2].snippet == ""  # missing fields tolerated


async def test_searxng_retries_5xx(searx: tuple[str, SearxState]) -> None:
    url, state = searx
    state.fail_first = 2
    hits = await SearxngBackend(url, timeout_s=2.0, retries=2).search("ray", 5)
    assert len(hits) == 3 and len(state.requests) == 3


async def test_searxng_gives_up_after_retries(searx: tuple[str, SearxState]) -> None:
    url, state = searx
    state.fail_first = 10
    outcome = await WebSearchTool(SearxngBackend(url, timeout_s=2.0, retries=1)).run({"query": "ray"})
    assert outcome.error is not None and outcome.error.code == "FAILED"
    assert "2 attempt(s)" in outcome.error.message and "HTTP 503" in outcome.error.message
    assert len(state.requests) == 2


async def test_searxng_timeout(searx: tuple[str, SearxState]) -> None:
    url, state = searx
    state.delay_s = 1.0
    outcome = await WebSearchTool(SearxngBackend(url, timeout_s=0.2, retries=0)).run({"query": "ray"})
    assert outcome.error is not None and "no answer within 0.2 s" in outcome.error.message


async def test_searxng_bad_answers(searx: tuple[str, SearxState]) -> None:
    url, state = searx
    state.body = "<html>not json</html>"
    outcome = await WebSearchTool(SearxngBackend(url, timeout_s=2.0, retries=0)).run({"query": "ray"})
    assert outcome.error is not None and "did not answer JSON" in outcome.error.message
    state.body = json.dumps({"query": "ray"})
    outcome = await WebSearchTool(SearxngBackend(url, timeout_s=2.0, retries=0)).run({"query": "ray"})
    assert outcome.error is not None and "'results'" in outcome.error.message


async def test_searxng_unreachable_is_a_clear_failure() -> None:
    outcome = await WebSearchTool(SearxngBackend("http://127.0.0.1:9", timeout_s=1.0, retries=0)).run({"query": "x"})
    assert outcome.error is not None and outcome.error.code == "FAILED"
    assert "cannot connect" in outcome.error.message


def test_searxng_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        SearxngBackend("file:///etc/passwd")
