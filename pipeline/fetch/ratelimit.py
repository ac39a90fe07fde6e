"""Per-host politeness: a cap on requests in flight and a least gap between request starts.

The state lives in one `DomainRateLimiter`, owned by one `Fetcher`. On Dataflow that is per
worker (per DoFn instance), not global: N workers may together send N times the configured
concurrency to one host. A global limit needs the job graph to group URLs by host first.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

# Forget past "next start" times once this many hosts are remembered.
_SWEEP_AT = 4096


class DomainRateLimiter:
    """Limits concurrency and request rate per host name, thread-safely."""

    def __init__(self, concurrency: int, min_interval_s: float) -> None:
        self._concurrency = concurrency
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._semaphores: dict[str, threading.BoundedSemaphore] = {}
        self._users: dict[str, int] = {}
        self._next_start: dict[str, float] = {}

    @contextlib.contextmanager
    def slot(self, host: str) -> Iterator[None]:
        """Hold one of `host`'s request slots, after waiting out its min interval."""
        with self._lock:
            semaphore = self._semaphores.get(host)
            if semaphore is None:
                semaphore = threading.BoundedSemaphore(self._concurrency)
                self._semaphores[host] = semaphore
            self._users[host] = self._users.get(host, 0) + 1
        try:
            with semaphore:
                self._wait_turn(host)
                yield
        finally:
            with self._lock:
                self._users[host] -= 1
                if self._users[host] == 0:
                    # Forget idle hosts so a crawl over millions of hosts stays small.
                    del self._users[host]
                    del self._semaphores[host]
                    if self._next_start.get(host, 0.0) <= time.monotonic():
                        self._next_start.pop(host, None)

    def _wait_turn(self, host: str) -> None:
        if self._min_interval_s <= 0:
            return
        with self._lock:
            now = time.monotonic()
            if len(self._next_start) > _SWEEP_AT:
                self._next_start = {h: t for h, t in self._next_start.items() if t > now}
            start = max(now, self._next_start.get(host, now))
            self._next_start[host] = start + self._min_interval_s
        delay = start - now
        if delay > 0:
            time.sleep(delay)
