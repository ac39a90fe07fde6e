"""LAIT's aggregation: of the captions found for one image, keep the best-scored.

A page offers an image with an alt text, a title and surrounding text, and the same image
appears on many pages; ImageBERT's LAIT keeps the caption that describes it best. "Same
image" is the same downloaded bytes (`sha256`), so it is a shuffle on the hash, and the
rest point at the kept record with `duplicate_of`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from dedupe.keep_best import DEFAULT_HOT_CAP, KeepBestPerKey
from lait.record import NAMESPACE, Record, RejectReason, Status


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


def _image_of(record: Record) -> str | None:
    return record.sha256 if _groupable(record) else None


def _rank(record: Record) -> tuple[float, str]:
    return (-(record.clip_score or 0.0), record.key)


class BestCaptionPerImage(beam.PTransform):
    """Records in, records out: live scored records grouped by image hash, one kept per
    image; settled records and live ones without hash or score pass unchanged.

    The choice is a combiner over (score, key) per hash and a join back (`KeepBestPerKey`):
    an image under a million captions is never one sorted group, and no bytes move.
    """

    def __init__(self, hot_cap: int = DEFAULT_HOT_CAP) -> None:
        super().__init__()
        self.hot_cap = hot_cap

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return records | "KeepBest" >> KeepBestPerKey(
            key_of=_image_of,
            rank_of=_rank,
            id_of=lambda r: r.sighting_id or r.key,
            lose=_not_best,
            hot_cap=self.hot_cap,
        )


def _not_best(record: Record, best_rank: tuple[float, str], best_id: str) -> Record:
    Metrics.counter(NAMESPACE, f"clip.{RejectReason.NOT_BEST_CAPTION}").inc()
    best_score, best_key = -best_rank[0], best_rank[1]
    return record.rejected(
        RejectReason.NOT_BEST_CAPTION,
        f"clip {record.clip_score:.4f} < {best_score:.4f} for the same image",
        duplicate_of=best_key,
        value=record.clip_score,
        limit=best_score,
    )
