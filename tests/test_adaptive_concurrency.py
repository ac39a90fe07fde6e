"""Adaptive per-host concurrency: the AIMD limit on its own (a fake clock), then a real
fetcher against loopback hosts that count the requests they hold at once."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fetch_server import PNG, FetchTestHandler, FetchTestServer

from pipeline.fetch import FetchConfig, Fetcher, FetchRejected
from pipeline.fetch.adaptive import AdaptiveLimit, FixedLimit


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_fast_answers_grow_the_limit_one_window_at_a_time() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(initial=2, ceiling=5, slow_s=1.0, clock=clock)
    # One full window of fast answers (2 at limit 2) raises it by one.
    with limit.slot(), limit.slot():
        clock.now += 0.01
    assert limit.limit == 2  # only the second slot filled the window: half a window
    for _ in range(3):
        with limit.slot(), limit.slot():
            clock.now += 0.01
    assert limit.limit == 3
    for _ in range(100):
        with contextlib.ExitStack() as held:
            for _ in range(limit.limit):
                held.enter_context(limit.slot())
            clock.now += 0.01
    assert limit.limit == limit.ceiling == 5  # never past the ceiling
    assert limit.peak <= 5


def test_an_idle_window_is_no_evidence() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(initial=2, ceiling=8, slow_s=1.0, clock=clock)
    for _ in range(50):  # one request at a time: the window of 2 is never full
        with limit.slot():
            clock.now += 0.01
    assert limit.limit == 2


def test_overload_halves_the_limit_once_per_window() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(initial=8, ceiling=8, slow_s=1.0, clock=clock)
    with contextlib.ExitStack() as held:
        slots = [held.enter_context(limit.slot()) for _ in range(8)]
        clock.now += 0.01
        for slot in slots:
            slot.mark_overloaded()
    assert limit.limit == 4  # 8 failures sent under one limit: one cut
    with limit.slot() as slot:
        clock.now += 0.01
        slot.mark_overloaded()
    assert limit.limit == 2
    for _ in range(5):
        with limit.slot() as slot:
            clock.now += 0.01
            slot.mark_overloaded()
    assert limit.limit == 1  # never under one


def test_a_slow_answer_counts_as_overload() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(initial=4, ceiling=8, slow_s=1.0, clock=clock)
    with limit.slot():
        clock.now += 1.5
    assert limit.limit == 2


def test_retry_after_pauses_new_requests() -> None:
    limit = AdaptiveLimit(initial=4, ceiling=4, slow_s=5.0)
    with limit.slot() as slot:
        slot.mark_overloaded(retry_after_s=0.3)
    started = time.monotonic()
    with limit.slot():
        waited = time.monotonic() - started
    assert waited >= 0.25


def test_a_fixed_limit_never_moves() -> None:
    limit = FixedLimit(3)
    for _ in range(20):
        with limit.slot() as slot:
            slot.mark_overloaded()
    assert limit.limit == 3
    with pytest.raises(ValueError):
        AdaptiveLimit(initial=0, ceiling=4, slow_s=1.0)


# -- a real fetcher, real hosts ------------------------------------------------------------------


class _CountingServer(FetchTestServer):
    """The test server, counting the requests it holds at once."""

    def __init__(self) -> None:
        super().__init__(handler=_CountingHandler)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.seen: list[int] = []  # requests in flight as each one arrived
        self.refused = 0


class _CountingHandler(FetchTestHandler):
    """/fast answers in 20 ms; /busy answers 503 (Retry-After 0) whenever more than
    BUSY_AT requests are in flight, like a host at capacity. Both count in flight."""

    BUSY_AT = 2
    server: _CountingServer

    def _route(self, path: str, query: dict[str, list[str]], ident: str) -> None:
        if not path.startswith(("/fast/", "/busy/")):
            super()._route(path, query, ident)
            return
        server = self.server
        with server.lock:
            server.in_flight += 1
            now = server.in_flight
            server.seen.append(now)
        busy = path.startswith("/busy/") and now > self.BUSY_AT
        time.sleep(0.02)
        with server.lock:
            server.in_flight -= 1  # out before answering
            if busy:
                server.refused += 1
        if busy:
            self._reply(503, b"busy", "text/plain", {"Retry-After": "0"})
        else:
            self._reply(200, PNG)


@pytest.fixture
def host() -> Iterator[_CountingServer]:
    server = _CountingServer()
    server.start()
    yield server
    server.stop()


def _fetch_all(server: _CountingServer, route: str, n: int, **config: object) -> int:
    """Fetch n URLs of `route` on 16 threads; how many were refused in the end."""
    fetch = FetchConfig(
        allowed_networks=("127.0.0.1/32",),
        backoff_s=0.01,
        per_domain_concurrency=8,
        initial_per_domain_concurrency=4,
        **config,  # type: ignore[arg-type]
    )
    failed = 0
    with Fetcher(fetch) as fetcher, ThreadPoolExecutor(16) as pool:

        def one(i: int) -> bool:
            try:
                fetcher.fetch(f"http://127.0.0.1:{server.port}/{route}/{i}")
            except FetchRejected:
                return False
            return True

        failed = sum(1 for ok in pool.map(one, range(n)) if not ok)
    return failed


def test_a_fast_host_gets_more_than_the_starting_concurrency(host: _CountingServer) -> None:
    assert _fetch_all(host, "fast", 200) == 0
    seen = host.seen
    assert max(seen) > 4  # grew past where it started
    assert max(seen) <= 8  # never past the ceiling


def test_an_overloaded_host_sees_fewer_requests_at_once(host: _CountingServer) -> None:
    _fetch_all(host, "busy", 200, retries=3)
    adaptive_seen = list(host.seen)
    adaptive_refused = host.refused
    host.seen.clear()
    host.refused = 0
    _fetch_all(host, "busy", 200, retries=3, adaptive_concurrency=False)
    fixed_seen = list(host.seen)
    fixed_refused = host.refused
    # Past the first requests the adaptive client holds the host near what it can take.
    later = adaptive_seen[len(adaptive_seen) // 4 :]
    assert sum(later) / len(later) < 3.0, sum(later) / len(later)
    assert max(fixed_seen) == 8
    assert sum(fixed_seen) / len(fixed_seen) > 4.0
    assert adaptive_refused * 2 < fixed_refused, (adaptive_refused, fixed_refused)
