"""Title and plain text of a document file, by its kind (.txt, .md, .html)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

DOCUMENT_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".html", ".htm"})
MAX_TITLE_CHARS = 200


class _HtmlText(HTMLParser):
    """Collects <title> and the visible text; script, style and template content is skipped."""

    _SKIP = frozenset({"script", "style", "template", "noscript", "head"})
    _BLOCK = frozenset({"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.h1 = ""
        self.parts: list[str] = []
        self._stack: list[str] = []
        self._in_title = False
        self._in_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag == "h1":
            self._in_h1 = True
        if tag in self._SKIP:
            self._stack.append(tag)
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "h1":
            self._in_h1 = False
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._in_h1:
            self.h1 += data
        if not self._stack:
            self.parts.append(data)


def _squash(text: str) -> str:
    return re.sub(r"[ \t\r\f\v]+", " ", re.sub(r"\n\s*\n+", "\n\n", text)).strip()


def extract(path: Path, raw: str) -> tuple[str, str]:
    """``(title, text)`` of a document; the title falls back to the file name."""
    suffix = path.suffix.lower()
    title = ""
    if suffix in (".html", ".htm"):
        parser = _HtmlText()
        parser.feed(raw)
        parser.close()
        title = (parser.title or parser.h1).strip()
        text = _squash("".join(parser.parts))
    else:
        text = _squash(raw)
        for line in raw.splitlines():
            stripped = line.strip()
            if not stripped:
                continue
            if suffix in (".md", ".markdown"):
                if stripped.startswith("#"):
                    title = stripped.lstrip("#").strip()
                    break
                continue
            title = stripped
            break
    title = " ".join(title.split())[:MAX_TITLE_CHARS] or path.stem.replace("-", " ").replace("_", " ")
    return title, text
