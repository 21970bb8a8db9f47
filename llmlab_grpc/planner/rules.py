"""Deterministic planning rules, tried before any model is asked.

A 135M model says 25 * 67 = 15625 (SmolLM2-135M, asked when this was built), so anything that *is* arithmetic,
a search or a URL goes to the tool that is right by construction. Each rule returns
the tool call and the reason that ends up in the trace, plus whether the query asks
for more than the value (then the model phrases an answer from the tool's result).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

TIMES, DOT, DIVIDE = "\u00d7", "\u00b7", "\u00f7"
FUNCTIONS = ("sqrt", "log", "sin", "cos", "abs", "round", "min", "max")
CONSTANTS = ("pi", "e")
_WORD = "|".join(FUNCTIONS + CONSTANTS)
# A run of arithmetic: numbers, operators, parentheses, commas, allowed names, spaces.
_EXPR_RE = re.compile(
    rf"(?:\b(?:{_WORD})\b|\d[\d_]*(?:\.\d+)?|\.\d+|[-+*/%^()," + TIMES + DIVIDE + DOT + r"]|\*\*|//|\s)+",
    re.IGNORECASE,
)
_OPERATOR_RE = re.compile(
    r"[-+*/%^" + TIMES + DIVIDE + DOT + r"]|\b(?:" + "|".join(FUNCTIONS) + r")\s*\(", re.IGNORECASE
)
_FILLER = {
    "what", "whats", "what's", "is", "are", "the", "of", "value", "calculate", "compute", "evaluate",
    "please", "how", "much", "result", "answer", "tell", "me", "can", "you", "solve", "equals", "equal",
    "to", "a", "an", "quick", "quickly", "exactly", "do", "math", "=", "number", "give",
}
_URL_RE = re.compile(r"https?://[^\s<>\"')\]]+", re.IGNORECASE)
_OPEN_RE = re.compile(
    r"^\s*(?:please\s+)?(open|browse|visit|fetch|screenshot|take a screenshot of|show me)\s+(?P<target>\S+)",
    re.IGNORECASE,
)
_DOMAIN_RE = re.compile(r"^(?:[a-z0-9-]+\.)+[a-z]{2,}(?::\d+)?(?:/\S*)?$", re.IGNORECASE)
# Only the request's opening words are a pattern; the search terms are the rest of the text, with
# trailing punctuation cut by string methods. A lazy ``(?P<q>.+?)`` followed by optional trailing
# runs backtracked in cubic time ("search a" + spaces + "b": 17 s at 2,400 characters, issue 16).
# Possessive quantifiers never give back what they took, so the prefix is linear too.
_SEARCH_PREFIX_RE = re.compile(
    r"\s*+(?:please\s++)?(?:web\s++)?(?:search|look\s*+up|lookup|find|google)\s++(?:the\s++web\s++)?(?:for\s++)?",
    re.IGNORECASE,
)
_SEARCH_TRAILER = "?.!"


@dataclass
class RuleMatch:
    """A tool the query clearly needs."""

    tool: str
    arguments: dict[str, Any]
    reason: str
    phrase_with_model: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def normalise_expression(expr: str) -> str:
    """Make everyday notation Python arithmetic: ^ is **, the multiplication sign and dot are *, the division sign /."""
    expr = expr.replace("^", "**").replace(TIMES, "*").replace(DOT, "*").replace(DIVIDE, "/")
    return re.sub(r"\s+", " ", expr).strip().strip(",").strip()


def _leftover_words(text: str, span: tuple[int, int]) -> list[str]:
    rest = (text[: span[0]] + " " + text[span[1]:]).lower()
    return [w for w in re.findall(r"[a-z']+|=", rest) if w not in _FILLER]


_DIGIT_RE = re.compile(r"\d")
_TIMES_X_RE = re.compile(r"(\d)\s*[xX]\s*(?=\d)")


def match_arithmetic(text: str) -> RuleMatch | None:
    if not _DIGIT_RE.search(text):
        return None  # no number, no expression (most chat): the runs below would all be turned down
    text = _TIMES_X_RE.sub(r"\1 * ", text)  # "25 x 67"
    best: re.Match[str] | None = None
    for m in _EXPR_RE.finditer(text):
        candidate = m.group(0)
        if _DIGIT_RE.search(candidate) and _OPERATOR_RE.search(candidate) and (
            best is None or len(candidate.strip()) > len(best.group(0).strip())
        ):
            best = m
    if best is None:
        return None
    expr = normalise_expression(best.group(0))
    # A lone negative number or a date-like "2024-05" is not a question for the calculator.
    if re.fullmatch(r"-?\d+(\.\d+)?", expr) or re.fullmatch(r"\d{4}-\d{1,2}(-\d{1,2})?", expr):
        return None
    if expr.count("(") != expr.count(")"):
        return None
    leftover = _leftover_words(text, best.span())
    return RuleMatch(
        tool="calculator",
        arguments={"expression": expr},
        reason=f"rule: the query contains the arithmetic expression {expr!r}",
        phrase_with_model=bool(leftover),
    )


def match_url(text: str) -> RuleMatch | None:
    screenshot = "screenshot" in text.lower()
    url_match = _URL_RE.search(text)
    if url_match:
        url = url_match.group(0).rstrip(".,;:!?")
        rest = _URL_RE.sub(" ", text)
    else:
        open_match = _OPEN_RE.match(text)
        if not open_match:
            return None
        target = open_match.group("target").rstrip(".,;:!?")
        if not _DOMAIN_RE.match(target):
            return None
        url = f"https://{target}"
        rest = text[open_match.end():]
    leftover = [w for w in re.findall(r"[a-z']+", rest.lower())
                if w not in _FILLER | {"open", "browse", "visit", "fetch", "screenshot", "take", "of", "page",
                                       "the", "show", "and", "it", "website", "site", "url", "this"}]
    return RuleMatch(
        tool="browser",
        arguments={"url": url, "screenshot": screenshot},
        reason=f"rule: the query names the URL {url}" + (" and asks for a screenshot" if screenshot else ""),
        phrase_with_model=bool(leftover),
    )


def match_search(text: str) -> RuleMatch | None:
    """ "search/look up/find/google [the web] [for] TERMS", TERMS on one line, trailing ?.! dropped."""
    m = _SEARCH_PREFIX_RE.match(text)
    if not m:
        return None
    query = text[m.end():].rstrip().rstrip(_SEARCH_TRAILER).strip()
    if not query or "\n" in query:
        return None
    return RuleMatch(tool="web_search", arguments={"query": query},
                     reason=f"rule: the query asks to search for {query!r}")


def match_rules(text: str) -> RuleMatch | None:
    """The first deterministic rule that fits: a URL, a search request, then arithmetic."""
    return match_url(text) or match_search(text) or match_arithmetic(text)


TOOLISH_WORDS = re.compile(
    r"\b(calculate|compute|search|look\s*up|find|website|web\s*page|url|browse|open|screenshot|news|latest|"
    r"current|today|convert|how\s+many|square\s+root|percent|fetch)\b",
    re.IGNORECASE,
)


def might_need_tool(text: str) -> bool:
    """Cheap gate for asking the model to propose a tool call (most chat needs none)."""
    return bool(TOOLISH_WORDS.search(text))


@dataclass
class RouteHints:
    """What the text alone says about routing: a rule's tool call, else whether a tool may help."""

    rule: RuleMatch | None
    toolish: bool
    note: str = ""


def route_hints(text: str) -> RouteHints:
    """Every rule and the tool gate in one call, so the planner can run them off its event loop.

    Each pattern here is linear in the length of ``text`` (``tests/test_planner_rules.py`` feeds
    adversarial strings up to the planner's 32,000-character limit through every rule); at that
    length they still take tens of milliseconds, which is why long texts go to a thread.
    """
    rule = match_rules(text)
    return RouteHints(rule=rule, toolish=rule is None and might_need_tool(text))
