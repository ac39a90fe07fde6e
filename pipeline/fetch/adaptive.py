"""How many requests one host gets at once: an AIMD limit, like TCP's congestion window.

`AdaptiveLimit` holds one host's limit, between 1 and a ceiling, starting at `initial`:

- up by one after a window of `limit` fast answers, counted only while the window was full
  (a host fetched by one thread at a time gives no evidence that it can take more);
- halved (at least 1) on a sign of overload: a 429, a 5xx, a timeout, a connection error,
  or an answer slower than `slow_s`. Requests already in flight when the limit fell were
  sent under the old limit, so their failures do not halve it again;
- paused by a Retry-After: no new request starts before it has passed (the caller caps the
  wait at `FetchConfig.max_retry_after_s` and gives up on longer ones).

A `FixedLimit` has the same face and never moves (`FetchConfig.adaptive_concurrency` off).
Both are thread-safe; a `Fetcher`'s rate limiter keeps one per host (`ratelimit.py`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

Clock = Callable[[], float]


class RequestSlot:
    """One request's hold on its host's limit; the fetcher says how the exchange went."""

    __slots__ = ("overloaded", "retry_after_s", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.overloaded = False
        self.retry_after_s: float | None = None

    def mark_overloaded(self, retry_after_s: float | None = None) -> None:
        """The host answered 429/5xx, timed out or refused the connection."""
        self.overloaded = True
        self.retry_after_s = retry_after_s


class AdaptiveLimit:
    """One host's concurrency limit (see the module docs)."""

    def __init__(
        self, initial: int, ceiling: int, slow_s: float, clock: Clock = time.monotonic
    ) -> None:
        if ceiling < 1 or initial < 1 or slow_s <= 0:
            raise ValueError("AdaptiveLimit: initial and ceiling >= 1, slow_s > 0")
        self.ceiling = ceiling
        self.slow_s = slow_s
        self._clock = clock
        self._limit = min(initial, ceiling)
        self._in_flight = 0
        self._credit = 0.0  # fast answers toward the next +1, in units of one window
        self._cut_at = float("-inf")  # when the limit was last halved
        self._paused_until = float("-inf")
        self._changed = threading.Condition()
        self.peak = 0  # the most requests this limit ever let run at once

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextlib.contextmanager
    def slot(self) -> Iterator[RequestSlot]:
        """Wait for room under the limit (and past any pause); hold it for one request."""
        with self._changed:
            while True:
                wait = self._paused_until - self._clock()
                if wait > 0:
                    self._changed.wait(wait)
                elif self._in_flight >= self._limit:
                    self._changed.wait()
                else:
                    break
            self._in_flight += 1
            self.peak = max(self.peak, self._in_flight)
            full = self._in_flight >= self._limit
            request = RequestSlot(self._clock())
        try:
            yield request
        finally:
            self._settle(request, full)

    def _settle(self, request: RequestSlot, window_was_full: bool) -> None:
        now = self._clock()
        slow = now - request.started > self.slow_s
        with self._changed:
            self._in_flight -= 1
            if request.retry_after_s is not None and request.retry_after_s > 0:
                self._paused_until = max(self._paused_until, now + request.retry_after_s)
            if request.overloaded or slow:
                if request.started >= self._cut_at:  # sent under the current limit
                    self._limit = max(1, self._limit // 2)
                    self._cut_at = now
                    self._credit = 0.0
            elif window_was_full and self._limit < self.ceiling:
                self._credit += 1.0 / self._limit
                if self._credit >= 1.0:
                    self._limit += 1
                    self._credit = 0.0
            self._changed.notify_all()

    def idle(self) -> bool:
        """No request in flight (the limiter may forget an idle host's limit)."""
        return self._in_flight == 0


class FixedLimit(AdaptiveLimit):
    """A limit that never moves: `ceiling` requests at once (Retry-After still pauses)."""

    def __init__(self, ceiling: int, clock: Clock = time.monotonic) -> None:
        super().__init__(ceiling, ceiling, slow_s=float("inf"), clock=clock)

    def _settle(self, request: RequestSlot, window_was_full: bool) -> None:
        now = self._clock()
        with self._changed:
            self._in_flight -= 1
            if request.retry_after_s is not None and request.retry_after_s > 0:
                self._paused_until = max(self._paused_until, now + request.retry_after_s)
            self._changed.notify_all()
