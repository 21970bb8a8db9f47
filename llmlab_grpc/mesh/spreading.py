"""Which llm node should generate next: the one expected to finish the new request first.

A node's expected wait for one more generation is ``(queue + 1) / speed``: the generations
running or queued there plus the new one, over its measured decoding speed. So a node twice
as fast takes about twice the work, and a busier node gets less until its queue drains.

``queue`` is the larger of what the node last reported (heartbeats, up to a second old) and
the generations this planner itself has in flight there (known at once, so eight requests
arriving together do not all pick the same idle node). ``speed`` is the node's smoothed
tokens/s (``NodeLoad.tokens_per_second``); a node not measured yet counts at the mean speed
of those that are, so a new node gets its fair share and is measured by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LlmLoad:
    """What a planner knows of one llm node."""

    queue: int
    speed: float = 0.0
    local: bool = False


def expected_wait(load: LlmLoad, fallback_speed: float) -> float:
    """Seconds-per-token-like score: lower finishes sooner (only the order matters)."""
    speed = load.speed if load.speed > 0 else fallback_speed
    return (max(0, load.queue) + 1) / speed


def fallback_speed(loads: Sequence[LlmLoad]) -> float:
    """The mean measured speed, or 1.0 when nothing is measured (then only queues decide)."""
    measured = [x.speed for x in loads if x.speed > 0]
    return sum(measured) / len(measured) if measured else 1.0


def spread_order(loads: Sequence[LlmLoad]) -> list[int]:
    """Indexes of ``loads``, best first: shortest expected wait, this node first on a tie (no hop)."""
    fallback = fallback_speed(loads)
    return sorted(range(len(loads)), key=lambda i: (expected_wait(loads[i], fallback), not loads[i].local, i))
