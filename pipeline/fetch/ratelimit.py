"""Per-host politeness: a limit on requests in flight and a least gap between request starts.

The state lives in one `DomainRateLimiter`, owned by one `Fetcher`. On Dataflow that is per
worker (per DoFn instance), not global: the job-wide bound on one host is the graph's (its
fetches are keyed by (host, one of `max_workers_per_host` splits), each split fetched by one
DoFn at a time), so a host never sees more than splits x `per_domain_concurrency` at once.

Each host's limit is an `AdaptiveLimit` (`adaptive.py`: up while the host answers fast,
halved on 429/5xx/timeouts/slow answers, paused by Retry-After) or, with adaptive
concurrency off, a `FixedLimit`. A host's limit is kept while the host is used and for a
while after (the most recently used `_KEEP_HOSTS` idle hosts), so what a batch learned
about a host carries to the next batch.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator

from pipeline.fetch.adaptive import AdaptiveLimit, FixedLimit, RequestSlot

# Idle hosts whose limits (and "next start" times) are remembered.
_KEEP_HOSTS = 4096


class DomainRateLimiter:
    """Limits concurrency and request rate per host name, thread-safely.

    `concurrency` is the ceiling; with `adaptive`, a host's limit starts at `initial`
    (default: the ceiling) and moves between 1 and the ceiling.
    """

    def __init__(
        self,
        concurrency: int,
        min_interval_s: float,
        *,
        adaptive: bool = False,
        initial: int | None = None,
        slow_s: float = 2.0,
    ) -> None:
        self._concurrency = concurrency
        self._min_interval_s = min_interval_s
        self._adaptive = adaptive
        self._initial = concurrency if initial is None else min(initial, concurrency)
        self._slow_s = slow_s
        self._lock = threading.Lock()
        self._limits: OrderedDict[str, AdaptiveLimit] = OrderedDict()
        self._users: dict[str, int] = {}
        self._next_start: dict[str, float] = {}

    def limit_of(self, host: str) -> AdaptiveLimit | None:
        """The limit `host` has now (None if it has none yet or it was forgotten)."""
        with self._lock:
            return self._limits.get(host)

    @contextlib.contextmanager
    def slot(self, host: str) -> Iterator[RequestSlot]:
        """Hold one of `host`'s request slots, after waiting out its min interval; the slot
        yielded takes the exchange's outcome (`RequestSlot.mark_overloaded`)."""
        with self._lock:
            limit = self._limits.get(host)
            if limit is None:
                limit = self._new_limit()
                self._limits[host] = limit
            self._limits.move_to_end(host)
            self._users[host] = self._users.get(host, 0) + 1
            self._forget_idle_hosts()
        try:
            with limit.slot() as request:
                if self._wait_turn(host):
                    request.started = time.monotonic()  # the answer's time starts now
                yield request
        finally:
            with self._lock:
                self._users[host] -= 1
                if self._users[host] == 0:
                    del self._users[host]

    def _new_limit(self) -> AdaptiveLimit:
        if self._adaptive:
            return AdaptiveLimit(self._initial, self._concurrency, self._slow_s)
        return FixedLimit(self._concurrency)

    def _forget_idle_hosts(self) -> None:
        # Under the lock. Oldest first; a host some thread holds or waits on is kept.
        if len(self._limits) <= _KEEP_HOSTS:
            return
        now = time.monotonic()
        for host in list(self._limits):
            if len(self._limits) <= _KEEP_HOSTS:
                break
            if host not in self._users:
                del self._limits[host]
                if self._next_start.get(host, 0.0) <= now:
                    self._next_start.pop(host, None)

    def _wait_turn(self, host: str) -> bool:
        """Wait until `host`'s next request may start; whether it waited."""
        if self._min_interval_s <= 0:
            return False
        with self._lock:
            now = time.monotonic()
            if len(self._next_start) > _KEEP_HOSTS:
                self._next_start = {h: t for h, t in self._next_start.items() if t > now}
            start = max(now, self._next_start.get(host, now))
            self._next_start[host] = start + self._min_interval_s
        delay = start - now
        if delay > 0:
            time.sleep(delay)
        return delay > 0
