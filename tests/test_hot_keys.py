"""Hot keys through the graph's own stages: 200,000 candidates sharing one key, one image hash
or one caption are settled without any worker holding more than ~hot_cap of them at once,
and none is lost. (A logo with the same alt on every page of a big site is all three.)"""

from __future__ import annotations

from collections.abc import Callable

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from dedupe.keep_best import DEFAULT_HOT_CAP, GROUP_SIZE_METRIC
from lait.record import CaptionSource, Record, RejectReason, Status
from pipeline.clip import BestCaptionPerImage
from pipeline.graph import OnePerKey
from pipeline.text import TextFilters
from pipeline.text.config import TextFilterConfig

SIZES = [20_000, pytest.param(200_000, marks=pytest.mark.slow)]


def _record(i: int, url: str, caption: str, **fields: object) -> Record:
    base = Record.candidate(
        source="list",
        url=url,
        caption=caption,
        caption_source=CaptionSource.LIST,
        where=f"list.tsv:{i}",
    )
    return base if not fields else Record(**{**_fields(base), **fields})


def _fields(record: Record) -> dict[str, object]:
    return {name: getattr(record, name) for name in record.__slots__}


def _run_hot(
    n: int, make: Callable[[int], Record], stage: beam.PTransform, expected: dict[str, int]
) -> int:
    """Run `stage` over `n` records made by `make`, assert the outcome counts equal `expected`
    (status or reject reason → records), and return the largest group any join held."""
    pipeline = beam.Pipeline()
    out = pipeline | beam.Create([0]) | beam.FlatMap(lambda _: (make(i) for i in range(n))) | stage
    counts = (
        out
        | beam.Map(lambda r: (r.reject_reason.value if r.reject_reason else r.status.value, 1))
        | beam.CombinePerKey(sum)
    )
    assert_that(counts, equal_to(list(expected.items())))
    result = pipeline.run()
    result.wait_until_finish()
    sizes = result.metrics().query(MetricsFilter().with_name(GROUP_SIZE_METRIC))["distributions"]
    return max(d.committed.max for d in sizes)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("what", ["key", "image", "caption"])
def test_candidates_sharing_one_value(what: str, n: int) -> None:
    if what == "key":

        def make(i: int) -> Record:  # the same (url, caption) on 200k pages
            return _record(i, "http://site.example/logo.png", "the site logo")

        stage: beam.PTransform = OnePerKey()
        expected_reason = RejectReason.DUPLICATE_URL_CAPTION
    elif what == "image":

        def make(i: int) -> Record:  # 200k captions of one image (same bytes)
            return _record(
                i,
                f"http://site.example/{i}.jpg",
                f"caption {i}",
                sha256="ab" * 32,
                clip_score=round(0.2 + (i % 1000) / 10_000, 4),
            )

        stage = BestCaptionPerImage()
        expected_reason = RejectReason.NOT_BEST_CAPTION
    else:

        def make(i: int) -> Record:  # one boilerplate caption on 200k images
            return _record(i, f"http://site.example/{i}.jpg", "a photo of our lovely product")

        stage = TextFilters(TextFilterConfig(max_images_per_caption=10))
        expected_reason = RejectReason.CAPTION_SHARED_TOO_OFTEN

    # Nothing lost, nothing twice: one survivor (none for the over-shared caption).
    if what == "caption":
        expected = {expected_reason.value: n}
    else:
        expected = {Status.CANDIDATE.value: 1, expected_reason.value: n - 1}
    largest = _run_hot(n, make, stage, expected)
    assert largest <= 1.2 * DEFAULT_HOT_CAP, largest
