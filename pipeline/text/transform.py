"""`TextFilters`: clean every live caption, apply the per-caption rules, then drop captions
shared by too many images (a global count over the whole run, so it is a shuffle)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from dedupe.keep_best import JoinOne
from lait.record import NAMESPACE, Record, RejectReason, Status
from pipeline.text.cleaning import counting_key
from pipeline.text.config import TextFilterConfig
from pipeline.text.rules import CaptionRules


def load_vocabulary(path: str) -> frozenset[str]:
    """A word list, one word per line (any filesystem Beam reads: local, gs://, ...)."""
    with FileSystems.open(path) as handle:
        text = handle.read().decode("utf-8")
    return frozenset(line.strip().casefold() for line in text.splitlines() if line.strip())


class CheckCaptions(beam.DoFn):
    """Live records: cleaned caption, or rejected by the first rule that fires."""

    def __init__(self, config: TextFilterConfig) -> None:
        self.config = config

    def setup(self) -> None:
        vocabulary = (
            load_vocabulary(self.config.vocabulary_path) if self.config.vocabulary_path else None
        )
        self.rules = CaptionRules(self.config, vocabulary)
        self.passed = beam.metrics.Metrics.counter(NAMESPACE, "text_filter.passed")
        self.cleaned = beam.metrics.Metrics.counter(NAMESPACE, "text_filter.cleaned")

    def process(self, record: Record) -> Iterator[Record]:
        if record.status is not Status.CANDIDATE:
            yield record
            return
        verdict = self.rules.check(record.caption)
        if verdict.reason is not None:
            beam.metrics.Metrics.counter(NAMESPACE, f"text_filter.{verdict.reason}").inc()
            yield record.rejected(
                verdict.reason, verdict.detail, value=verdict.value, limit=verdict.limit
            )
            return
        self.passed.inc()
        if verdict.caption != record.caption:
            self.cleaned.inc()
            record = dataclasses.replace(record, caption=verdict.caption)
        yield record


def reject_if_shared(record: Record, images: int | None, limit: int) -> Iterator[Record]:
    """`record`, rejected when its caption is on more than `limit` images (`images` is the
    caption's count, None when under the limit)."""
    if images is None:
        yield record
        return
    beam.metrics.Metrics.counter(
        NAMESPACE, f"text_filter.{RejectReason.CAPTION_SHARED_TOO_OFTEN}"
    ).inc()
    yield record.rejected(
        RejectReason.CAPTION_SHARED_TOO_OFTEN,
        f"caption on {images} images (limit {limit})",
        value=images,
        limit=limit,
    )


class _LiveOrSettled(beam.PartitionFn):
    def partition_for(self, element: Any, num_partitions: int, *args: Any, **kwargs: Any) -> int:
        record: Record = element
        return 0 if record.status is Status.CANDIDATE else 1


def _is_live(record: Record) -> bool:
    return record.status is Status.CANDIDATE


class TextFilters(beam.PTransform):
    """Records in, records out: settled ones unchanged, live ones cleaned or rejected.

    The shared-caption rule counts distinct image URLs per caption (counting key) with a
    combiner, so a caption on millions of pages costs one small counter per worker, and the
    over-shared counts are joined back to the records by caption (`JoinOne`: a hot caption
    is spread over sub-keys), so no worker holds the list of over-shared captions.
    """

    def __init__(self, config: TextFilterConfig | None = None) -> None:
        super().__init__()
        self.config = config or TextFilterConfig()

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        limit = self.config.max_images_per_caption
        checked = records | "CheckCaptions" >> beam.ParDo(CheckCaptions(self.config))
        shared = (
            checked
            | "Live" >> beam.Filter(_is_live)
            | "CaptionImage" >> beam.Map(lambda r: (counting_key(r.caption), r.url))
            | "DistinctPairs" >> beam.Distinct()
            | "One" >> beam.Map(lambda pair: (pair[0], 1))
            | "ImagesPerCaption" >> beam.CombinePerKey(sum)
            | "OverShared" >> beam.Filter(lambda kv: kv[1] > limit)
        )
        live, settled = checked | "LiveOrSettled" >> beam.Partition(_LiveOrSettled(), 2)
        judged = {
            "many": live | "ByCaption" >> beam.Map(lambda r: (counting_key(r.caption), r)),
            "one": shared,
        } | "RejectShared" >> JoinOne(
            lambda r, images: reject_if_shared(r, images, limit),
            member_id=lambda r: r.sighting_id or r.key,
        )
        return (judged, settled) | "All" >> beam.Flatten()
