"""Each host's job-wide budget: how many image URLs, and how much fetch time, it gets.

- **Fetches** (`fetch.max_fetches_per_host`): of a host's distinct image URLs, those whose
  64-bit hash is among the host's `max` smallest are fetched; the rest become
  `OVER_HOST_BUDGET` outcomes without a request. The choice needs no order and no group:
  a combiner keeps each host's `max` smallest hashes, only hosts that reach the budget
  send their threshold to the workers (a side input of at most N / max entries), and every
  run of the job picks the same URLs.
- **Time** (`fetch.max_seconds_per_host`): a host's fetch time, summed over its splits
  (`fetch.max_workers_per_host`): each split fetches until its share is spent, and its URLs
  left then become `OVER_HOST_BUDGET` outcomes. Time is not reproducible, so which URLs a
  slow host loses may differ between runs; a rerun of a killed job reuses the outcomes its
  batches committed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from lait.record import RejectReason
from pipeline.fetch.urls import politeness_key


def url_rank(url: str) -> int:
    """A URL's place in its host's budget order: a stable 64-bit hash."""
    return int.from_bytes(hashlib.blake2b(url.encode(), digest_size=8).digest(), "big")


def _over_budget(url: str, thresholds: dict[str, int]) -> Iterator[beam.pvalue.TaggedOutput | str]:
    threshold = thresholds.get(politeness_key(url))
    if threshold is not None and url_rank(url) > threshold:
        yield beam.pvalue.TaggedOutput("over", url)
    else:
        yield url


class HostFetchBudget(beam.PTransform):
    """Distinct image URLs → {"within": URLs to fetch, "over": URLs past their host's budget}."""

    def __init__(self, budget: int | None) -> None:
        super().__init__()
        self.budget = budget

    def expand(self, urls: beam.PCollection) -> dict[str, beam.PCollection]:
        budget = self.budget
        if budget is None:
            return {"within": urls, "over": urls.pipeline | "NoneOver" >> beam.Create([])}
        thresholds = (
            urls
            | "Ranks" >> beam.Map(lambda url: (politeness_key(url), url_rank(url)))
            | "Smallest" >> beam.combiners.Top.SmallestPerKey(budget)
            | "AtBudget" >> beam.Filter(lambda kv: len(kv[1]) >= budget)
            | "Threshold" >> beam.MapTuple(lambda host, ranks: (host, max(ranks)))
        )
        split = urls | "WithinOrOver" >> beam.FlatMap(
            _over_budget, thresholds=beam.pvalue.AsDict(thresholds)
        ).with_outputs("over", main="within")
        return {"within": split.within, "over": split.over}


def over_fetch_budget_detail(url: str, budget: int) -> tuple[RejectReason, str, float]:
    """The reason, detail and limit of a URL past its host's fetch budget."""
    return (
        RejectReason.OVER_HOST_BUDGET,
        f"{politeness_key(url)} has more than fetch.max_fetches_per_host={budget} image URLs "
        "in this job; the ones taken are chosen by URL hash",
        float(budget),
    )


class SplitClock:
    """One host split's share of its host's time budget (`seconds / splits`), from its first
    fetch on; `None` seconds never runs out."""

    def __init__(self, seconds: float | None, splits: int, clock: Any = time.monotonic) -> None:
        self.share = None if seconds is None else seconds / splits
        self._clock = clock
        self._started: float | None = None

    def start(self) -> None:
        if self._started is None:
            self._started = self._clock()

    @property
    def elapsed(self) -> float:
        return 0.0 if self._started is None else self._clock() - self._started

    def spent(self) -> bool:
        return self.share is not None and self.elapsed >= self.share
