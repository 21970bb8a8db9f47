"""The embedded search backend: a SQLite FTS5 index with BM25 ranking and snippets.

``llmlab index PATH`` adds a folder of .txt/.md/.html files to ``$LLMLAB_HOME/search.db``
(re-running it updates changed files and drops deleted ones). Every node of a local mesh
shares that file. When the index is empty the sample corpus shipped in the package is
indexed on first use, so a new user gets real results at once.

SQLite calls are blocking, so the async ``search`` runs them in a worker thread; each
call opens its own connection (cheap, and safe across threads and processes), and
writes happen in one ``BEGIN IMMEDIATE`` transaction so nodes indexing at the same
moment do not interleave.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from llmlab_grpc.state import home
from llmlab_grpc.tools.base import ToolFailure
from llmlab_grpc.tools.search import SearchHit
from llmlab_grpc.tools.search.text import DOCUMENT_SUFFIXES, extract

MAX_FILE_BYTES = 2 * 1024 * 1024
"""Larger files are skipped (and counted as skipped)."""
MAX_FILES_PER_RUN = 10_000
"""One ``llmlab index`` run looks at most at this many documents."""
MAX_QUERY_TERMS = 32
"""Words of a query beyond this are ignored."""
SNIPPET_TOKENS = 24
"""Words in a result's snippet."""
BUSY_TIMEOUT_S = 10.0
STOP_WORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how", "i", "in", "is",
    "it", "me", "my", "of", "on", "or", "the", "this", "to", "what", "when", "where", "which", "who", "why", "with",
    "you",
})
"""Question words dropped from a query (unless nothing else is left), so they do not dilute ranking."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    mtime REAL NOT NULL,
    size INTEGER NOT NULL,
    indexed_at REAL NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS documents_fts USING fts5(title, body, tokenize = 'porter unicode61');
"""


def default_db_path() -> Path:
    """``LLMLAB_SEARCH_DB`` or ``$LLMLAB_HOME/search.db``."""
    return Path(os.environ.get("LLMLAB_SEARCH_DB") or home() / "search.db")


def sample_corpus() -> Path:
    """The folder of sample documents shipped inside the package."""
    return Path(str(files("llmlab_grpc") / "sample_corpus"))


@dataclass
class IndexReport:
    """What one indexing run did."""

    db: str
    root: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: int = 0
    documents: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fts_query(text: str) -> str:
    """A user's words as an FTS5 query: each a quoted term, any may match (BM25 ranks by how many).

    Quoting makes every word a literal, so punctuation and FTS5 operators in user input
    (``"``, ``*``, ``NEAR``, ``-``) can never be a syntax error.
    """
    words = list(dict.fromkeys(re.findall(r"\w+", text.lower())))
    content = [w for w in words if w not in STOP_WORDS] or words
    return " OR ".join(f'"{w}"' for w in content[:MAX_QUERY_TERMS])


def _documents(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in DOCUMENT_SUFFIXES:
                yield Path(dirpath) / name


class LocalIndex:
    """One SQLite FTS5 database file."""

    name = "local"

    def __init__(self, db_path: Path | None = None, auto_sample: bool = True) -> None:
        self.db_path = Path(db_path) if db_path is not None else default_db_path()
        self.auto_sample = auto_sample

    def _connect(self) -> sqlite3.Connection:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        return conn

    def count(self) -> int:
        with closing(self._connect()) as conn:
            return int(conn.execute("SELECT count(*) FROM documents").fetchone()[0])

    def index(self, root: Path) -> IndexReport:
        """Add or refresh every document under ``root``; drop indexed ones that are gone."""
        root = Path(root).expanduser().resolve()
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist")
        report = IndexReport(db=str(self.db_path), root=str(root))
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            seen: set[str] = set()
            for count, path in enumerate(_documents(root)):
                if count >= MAX_FILES_PER_RUN:
                    report.skipped += 1
                    continue
                self._index_file(conn, path, report, seen)
            report.removed = self._drop_missing(conn, root, seen)
            conn.execute("COMMIT")
            report.documents = int(conn.execute("SELECT count(*) FROM documents").fetchone()[0])
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
        return report

    def _index_file(self, conn: sqlite3.Connection, path: Path, report: IndexReport, seen: set[str]) -> None:
        try:
            stat = path.stat()
        except OSError:
            report.skipped += 1
            return
        key = str(path)
        seen.add(key)
        if stat.st_size > MAX_FILE_BYTES:
            report.skipped += 1
            return
        row = conn.execute("SELECT id, mtime, size FROM documents WHERE path = ?", (key,)).fetchone()
        if row is not None and row[1] == stat.st_mtime and row[2] == stat.st_size:
            report.unchanged += 1
            return
        try:
            raw = path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            report.skipped += 1
            return
        title, body = extract(path, raw)
        if row is None:
            cursor = conn.execute(
                "INSERT INTO documents (path, title, mtime, size, indexed_at) VALUES (?, ?, ?, ?, ?)",
                (key, title, stat.st_mtime, stat.st_size, time.time()),
            )
            doc_id = cursor.lastrowid
            report.added += 1
        else:
            doc_id = row[0]
            conn.execute("UPDATE documents SET title = ?, mtime = ?, size = ?, indexed_at = ? WHERE id = ?",
                         (title, stat.st_mtime, stat.st_size, time.time(), doc_id))
            conn.execute("DELETE FROM documents_fts WHERE rowid = ?", (doc_id,))
            report.updated += 1
        conn.execute("INSERT INTO documents_fts (rowid, title, body) VALUES (?, ?, ?)", (doc_id, title, body))

    def _drop_missing(self, conn: sqlite3.Connection, root: Path, seen: set[str]) -> int:
        prefix = str(root) if root.is_file() else str(root) + os.sep
        rows = conn.execute("SELECT id, path FROM documents WHERE path = ? OR substr(path, 1, ?) = ?",
                            (str(root), len(prefix), prefix)).fetchall()
        gone = [doc_id for doc_id, path in rows if path not in seen]
        for doc_id in gone:
            conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
            conn.execute("DELETE FROM documents_fts WHERE rowid = ?", (doc_id,))
        return len(gone)

    def query(self, text: str, max_results: int) -> list[SearchHit]:
        """Blocking search; ``search`` is the async face of it."""
        match = fts_query(text)
        if not match:
            raise ToolFailure("INVALID_ARGUMENT", "the query has no words to search for")
        if self.auto_sample and self.count() == 0:
            self.index(sample_corpus())
        with closing(self._connect()) as conn:
            rows = conn.execute(
                """
                SELECT d.path, d.title,
                       snippet(documents_fts, 1, '**', '**', '…', ?),
                       bm25(documents_fts, 4.0, 1.0) AS rank
                FROM documents_fts JOIN documents d ON d.id = documents_fts.rowid
                WHERE documents_fts MATCH ?
                ORDER BY rank LIMIT ?
                """,
                (SNIPPET_TOKENS, match, max_results),
            ).fetchall()
        return [
            SearchHit(title=title, url=Path(path).as_uri(), snippet=" ".join(snippet.split()),
                      score=round(-rank, 4), source="local")
            for path, title, snippet, rank in rows
        ]

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        try:
            return await asyncio.to_thread(self.query, query, max_results)
        except sqlite3.Error as exc:
            raise ToolFailure("FAILED", f"local search index {self.db_path} failed: {exc}") from exc
