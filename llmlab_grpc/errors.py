"""Errors that end a node's start-up (or its life) with one line a person can act on.

``llmlab node`` prints ``llmlab node: error: <message>`` and exits with code 2 for these,
as it does for a wrong setting: the message says what failed and what to try, and no
traceback hides it.
"""

from __future__ import annotations


class StartupError(Exception):
    """The node cannot run; the message names the cause and the fix."""


class RayStartError(StartupError):
    """This node's Ray did not start, even after one retry."""


class DuplicateNodeError(StartupError):
    """Another live node already uses this node's id; this one (the newcomer) must go."""
