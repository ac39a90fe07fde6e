"""Caption cleaning, per-caption rules and the global shared-caption rule on real Beam."""

from __future__ import annotations

import sys
from pathlib import Path

import apache_beam as beam
import pytest

from lait.record import CaptionSource, Record, RejectReason, Status
from pipeline.text import TextFilterConfig, TextFilters, check_caption, clean_caption

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.filter_quality import beam_pipeline, collect


@pytest.mark.parametrize(
    ("caption", "reason"),
    [
        ("IMG_0042.jpg", RejectReason.FILENAME_CAPTION),
        ("DSC01234", RejectReason.FILENAME_CAPTION),
        ("20190612_142233.jpg", RejectReason.FILENAME_CAPTION),
        ("https://example.com/a.png", RejectReason.URL_CAPTION),
        ("www.example.com", RejectReason.URL_CAPTION),
        ("Click here!", RejectReason.BOILERPLATE_CAPTION),
        ("image 3", RejectReason.BOILERPLATE_CAPTION),
        ("logo", RejectReason.BOILERPLATE_CAPTION),
        ("red", RejectReason.CAPTION_TOO_SHORT),
        ("word " * 70, RejectReason.CAPTION_TOO_LONG),
        ("x7f3a9 b2c3d4 qq", RejectReason.HIGH_OOV_RATE),
        ("caf\ufffd au lait", RejectReason.UNDECODABLE_TEXT),
        ("a large red circle to the left of a small blue square", None),
        ("ein kleiner roter Kreis", None),
        ("上から順に小さな緑の円", None),  # no spaces, but many words
        ("a 4x4 truck on 3 wheels", None),
    ],
)
def test_rules(caption: str, reason: RejectReason | None) -> None:
    assert check_caption(caption).reason is reason


def test_cleaning() -> None:
    assert clean_caption("  a &amp;amp; b\u200b <b>red</b>\n circle ") == "a & b red circle"
    assert clean_caption("cafe\u0301") == "café"
    # A control character separates words; a zero-width one sits inside a word.
    assert (
        clean_caption("control\x01chars and\x0bmore\u2028lines") == "control chars and more lines"
    )
    assert clean_caption("zero\u200bwidth\ufeff") == "zerowidth"


def test_extra_boilerplate_and_bounds() -> None:
    config = TextFilterConfig(extra_boilerplate=("hero shot",), min_words=3)
    assert check_caption("Hero  shot", config).reason is RejectReason.BOILERPLATE_CAPTION
    assert check_caption("red circle", config).reason is RejectReason.CAPTION_TOO_SHORT


def _record(i: int, caption: str) -> Record:
    return Record.candidate(
        source="test", url=f"http://h/{i}.jpg", caption=caption, caption_source=CaptionSource.ALT
    )


def test_transform_cleans_rejects_and_counts_shared_captions_globally() -> None:
    shared = [_record(i, f"A sunny beach{'!' if i % 2 else ''}") for i in range(4)]
    rare = [_record(10 + i, "a sunny beach at dusk") for i in range(2)]
    duplicate_url = [_record(20, "my dog  &amp; me"), _record(20, "my dog  &amp; me")]
    settled = _record(30, "IMG_1.jpg").rejected(RejectReason.NO_CAPTION)
    records = [*shared, *rare, *duplicate_url, settled, _record(31, "thumbnail")]
    with collect() as results:
        with beam_pipeline() as pipeline:
            results.add(
                pipeline
                | beam.Create(records)
                | TextFilters(TextFilterConfig(max_images_per_caption=3))
            )
        out = results.read()
    assert len(out) == len(records)  # nothing lost
    by_url = {}
    for record in out:
        by_url.setdefault(record.url, []).append(record)
    for record in out:
        if record.url in {r.url for r in shared}:
            assert record.reject_reason is RejectReason.CAPTION_SHARED_TOO_OFTEN
    assert all(r.status is Status.CANDIDATE for r in out if "dusk" in r.caption)
    assert {r.caption for r in by_url["http://h/20.jpg"]} == {"my dog & me"}  # one image, once
    assert by_url["http://h/30.jpg"][0] == settled  # settled records pass unchanged
    assert by_url["http://h/31.jpg"][0].reject_reason is RejectReason.BOILERPLATE_CAPTION
