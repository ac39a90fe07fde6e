"""Beam counters for the funnel, so a Dataflow user watches it fill in live.

Counter names are `<stage>.<reason>` for rejects, plus `accepted` and `candidates`, in the
`lait` namespace; per-source totals are `source.<name>.<outcome>`.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from lait.record import NAMESPACE, Record, Status


class CountOutcome(beam.DoFn):
    """Count each settled record by outcome (pass-through)."""

    def process(self, record: Record) -> Iterator[Record]:
        Metrics.counter(NAMESPACE, "candidates").inc()
        if record.status is Status.ACCEPTED:
            Metrics.counter(NAMESPACE, "accepted").inc()
            outcome = "accepted"
        else:
            assert record.reject_reason is not None and record.reject_stage is not None
            Metrics.counter(NAMESPACE, "rejected").inc()
            Metrics.counter(NAMESPACE, f"{record.reject_stage}.{record.reject_reason}").inc()
            outcome = "rejected"
        Metrics.counter(NAMESPACE, f"source.{record.source}.{outcome}").inc()
        yield record


def count_page(outcome: str) -> None:
    """Count a crawled page's outcome (`fetched`, or a fetch reject reason)."""
    Metrics.counter(NAMESPACE, f"pages.{outcome}").inc()
