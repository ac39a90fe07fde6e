"""A `Fetcher`'s counters as Beam counters: `fetch.requests`, `fetch.dns_lookups`, ...

Beam counts only from the thread that runs the DoFn (a counter bumped on a fetch pool's
thread is lost), and a fetcher's counters are totals. So a DoFn keeps one `FetchMetrics`
and calls `publish(fetcher)` from its own thread (after each element or batch): it adds what
each counter grew by since the last call. Names are totals over all hosts (never one
counter per host: a crawl meets millions).
"""

from __future__ import annotations

from apache_beam.metrics import Metrics

from pipeline.fetch.client import Fetcher
from pipeline.outcomes import NAMESPACE

# Fetcher counter → Beam counter name (after "fetch."), where they differ.
_RENAMED = {"robots_txt_fetches": "robots_fetches"}


class FetchMetrics:
    """Publishes the growth of one fetcher's counters as Beam counters `fetch.<name>`."""

    def __init__(self) -> None:
        self._published: dict[str, int] = {}

    def publish(self, fetcher: Fetcher) -> None:
        """Add to each `fetch.<name>` counter what it grew by since the last call."""
        snapshot = fetcher.counters()
        for name, value in snapshot.items():
            grown = value - self._published.get(name, 0)
            if grown:
                Metrics.counter(NAMESPACE, f"fetch.{_RENAMED.get(name, name)}").inc(grown)
        self._published = snapshot
