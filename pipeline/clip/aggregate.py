"""LAIT's aggregation: of the captions found for one image, keep the best-scored.

A page offers an image with an alt text, a title and surrounding text, and the same image
appears on many pages; ImageBERT's LAIT keeps the caption that describes it best. "Same
image" is the same downloaded bytes (`sha256`), so it is a shuffle on the hash, and the
rest point at the kept record with `duplicate_of`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam

from lait.record import Record, RejectReason, Status

NAMESPACE = "lait"


def _groupable(record: Record) -> bool:
    return (
        record.status is Status.CANDIDATE
        and record.sha256 is not None
        and record.clip_score is not None
    )


def best_caption_of_image(records: Iterable[Record]) -> Iterator[Record]:
    """The highest `clip_score` passes (ties: smallest key, so reruns agree); the rest are
    rejected as NOT_BEST_CAPTION pointing at it."""
    ordered = sorted(records, key=lambda r: (-(r.clip_score or 0.0), r.key))
    best = ordered[0]
    yield best
    for other in ordered[1:]:
        yield other.rejected(
            RejectReason.NOT_BEST_CAPTION,
            f"clip {other.clip_score:.4f} < {best.clip_score:.4f} for the same image",
            duplicate_of=best.key,
            value=other.clip_score,
            limit=best.clip_score,
        )


class _GroupableOrNot(beam.PartitionFn):
    """Live, hashed and scored → 0; anything else → 1."""

    def partition_for(self, element: Any, num_partitions: int, *args: Any, **kwargs: Any) -> int:
        return 0 if _groupable(element) else 1


class _Aggregate(beam.DoFn):
    def setup(self) -> None:
        self.rejected = beam.metrics.Metrics.counter(
            NAMESPACE, f"clip.{RejectReason.NOT_BEST_CAPTION}"
        )

    def process(self, element: tuple[str, Iterable[Record]]) -> Iterator[Record]:
        for record in best_caption_of_image(element[1]):
            if record.status is Status.REJECTED:
                self.rejected.inc()
            yield record


class BestCaptionPerImage(beam.PTransform):
    """Records in, records out: live scored records grouped by image hash, one kept per
    image; settled records and live ones without hash or score pass unchanged."""

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        groupable, other = records | "Groupable" >> beam.Partition(_GroupableOrNot(), 2)
        kept = (
            groupable
            | "ByImage" >> beam.Map(lambda r: (r.sha256, r))
            | "GroupImages" >> beam.GroupByKey()
            | "KeepBest" >> beam.ParDo(_Aggregate())
        )
        return (kept, other) | "Merge" >> beam.Flatten()
