"""Flood control of one connection: a token bucket for the rate, a strike window for the cut-off."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class TokenBucket:
    """Refills continuously; ``take`` spends one token or says no."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self) -> bool:
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def refund(self) -> None:
        """Give a token back (a message that turned out to be an answer we asked for)."""
        self._tokens = min(self.burst, self._tokens + 1.0)


class StrikeWindow:
    """Refusals over a sliding window: ``limit`` of them within ``window_s`` seconds is too many.

    A counter that resets on every accepted message lets a flooder who sends just over
    the rate live forever (every other message gets through and wipes the slate); this
    one remembers each refusal for the whole window, so a steady flooder is cut off
    after ``limit`` refusals however many of its messages were accepted in between.
    Memory is bounded: at most ``limit`` timestamps are kept.
    """

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._times: deque[float] = deque(maxlen=limit)

    def strike(self) -> bool:
        """Record one refusal; True once ``limit`` refusals fall within the window."""
        now = self._clock()
        self._times.append(now)
        return len(self._times) >= self.limit and now - self._times[0] <= self.window_s

    def __len__(self) -> int:
        now = self._clock()
        return sum(1 for t in self._times if now - t <= self.window_s)
