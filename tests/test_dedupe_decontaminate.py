"""Decontamination against evaluation sets, on real Beam: images compared with every
evaluation hash (no banding miss), captions (exact and near) and URLs from a Karpathy split
file, and evaluation sets read from gs:// and s3:// (local emulators) on the workers."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.util import assert_that
from object_stores import ObjectStore, server, store
from PIL import Image

from dedupe import Decontaminate, DedupeConfig, Deduplicate, EvalImage, EvalImagesError
from dedupe.fingerprint import band_values, image_fingerprint
from lait.record import CaptionSource, Record, RejectReason, Status

__all__ = ["server", "store"]  # the fixtures, imported for pytest

THRESHOLD = DedupeConfig().eval_phash_threshold


def pattern_jpeg(seed: int, quality: int = 90, side: int = 256) -> bytes:
    """A JPEG of coarse random blocks: a distinctive pHash per seed."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize((side, side), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def record(i: int, caption: str, image: bytes | None = None, url: str = "") -> Record:
    candidate = Record.candidate(
        source="t",
        url=url or f"http://127.0.0.1/img/{i}.jpg",
        caption=caption,
        caption_source=CaptionSource.ALT,
    )
    phash = None
    if image is not None:
        phash = f"{image_fingerprint(image)[0]:016x}"
    return dataclasses.replace(
        candidate, image=image, phash=phash, original_width=256, original_height=256
    )


def run(records: list[Record], transform: beam.PTransform, check: Callable[[dict], None]) -> None:
    """Records through `transform` on the in-process runner; `check` gets {key: record}."""
    options = PipelineOptions(["--direct_running_mode=in_memory"])
    with beam.Pipeline(runner=FnApiRunner(), options=options) as pipeline:
        out = pipeline | beam.Create(records) | transform | beam.combiners.ToList()
        assert_that(out, lambda lists: check({r.key: r for r in lists[0]}))


def flipped(phash: int, bits: list[int]) -> int:
    return phash ^ sum(1 << b for b in bits)


def test_every_record_is_compared_with_every_eval_hash() -> None:
    """Hashes at the threshold that share no LSH band with the evaluation hash (banding
    alone would miss them) are dropped; one bit farther stays."""
    eval_hash = image_fingerprint(pattern_jpeg(1))[0]
    bands = DedupeConfig().phash_bands
    # two bits in each of the first five bands: 10 bits, every band but the last differs
    spread = [b * 11 + o for b in range(5) for o in (0, 1)]
    at_limit = flipped(eval_hash, spread)
    shared = set(band_values(at_limit, bands)) & set(band_values(eval_hash, bands))
    assert len(shared) == 1  # only the untouched band: 5-bit LSH guarantees nothing here
    spread_all = [b * 11 + o for b in range(5) for o in (0, 1)] + [60]
    beyond = flipped(eval_hash, spread_all)
    no_band = flipped(eval_hash, [b * 11 + o for b in range(6) for o in (0, 1)][:12])
    records = []
    for i, phash in enumerate([at_limit, beyond, no_band]):
        r = record(i, f"training picture number {i} of something else")
        records.append(dataclasses.replace(r, phash=f"{phash:016x}"))
    evals = [EvalImage("eval/1.jpg", eval_hash)]

    def check(out: dict) -> None:
        first, second, third = (out[r.key] for r in records)
        assert first.reject_reason is RejectReason.EVAL_CONTAMINATION
        assert first.reject_value == 10 and first.reject_limit == THRESHOLD
        assert "eval/1.jpg" in (first.reject_detail or "")
        assert second.status is Status.CANDIDATE  # 11 bits
        assert third.status is Status.CANDIDATE  # 12 bits, no band shared

    run(records, Decontaminate(evals), check)


def karpathy_set(folder: Path, url_of_first: str) -> Path:
    """A Flickr30k-style split file with two images on disk and one missing."""
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "100.jpg").write_bytes(pattern_jpeg(100))
    (folder / "images" / "200.jpg").write_bytes(pattern_jpeg(200))
    split = {
        "images": [
            {
                "filename": "100.jpg",
                "split": "test",
                "url": url_of_first,
                "sentences": [
                    {"raw": "Two young men in green shirts play frisbee on a sunny lawn."},
                    {"raw": "A dog."},
                ],
            },
            {
                "filename": "200.jpg",
                "split": "val",
                "sentences": [{"raw": "An old woman sells red peppers at a busy market stall"}],
            },
            {
                "filename": "300.jpg",  # not on disk: its captions still count
                "split": "test",
                "sentences": [{"raw": "A little girl climbs into a wooden playhouse outside"}],
            },
        ]
    }
    path = folder / "dataset_flickr30k.json"
    path.write_text(json.dumps(split))
    return path


def contaminated_and_clean() -> tuple[list[Record], dict[int, str | None]]:
    """Training records and what each should become (a detail fragment, or None: kept)."""
    eval_url = "https://farm1.staticflickr.com/1/100_abc.jpg"
    rows = [
        # the evaluation image re-encoded (near copy)
        (
            record(0, "some unrelated words about a photo here", pattern_jpeg(100, quality=60)),
            "evaluation image dataset_flickr30k.json:100.jpg",
        ),
        # exact caption: case, punctuation and spacing differ
        (record(1, "two young men in green shirts  play frisbee on a sunny lawn"), "caption is"),
        # near caption: one word of eleven changed (word-set Jaccard 10/12)
        (record(2, "An old woman sells green peppers at a busy market stall"), "caption is near"),
        # the caption of the image that is not on disk
        (record(3, "A little girl climbs into a wooden playhouse outside."), "caption is"),
        # the evaluation image's URL (another scheme and case of the host)
        (
            record(
                4,
                "a picture with a caption nobody wrote",
                url=eval_url.replace(
                    "https://farm1.staticflickr.com", "http://FARM1.staticflickr.com"
                ),
            ),
            "image url",
        ),
        # kept: short captions repeat by nature; unrelated image and caption
        (record(5, "A dog."), None),
        (record(6, "a completely different scene of mountains at dawn", pattern_jpeg(7)), None),
        (record(7, "An old man buys bread at a bakery in the morning"), None),
    ]
    return [r for r, _ in rows], dict(enumerate(d for _, d in rows))


def test_karpathy_split_file_decontaminates_images_captions_and_urls(tmp_path: Path) -> None:
    split = karpathy_set(tmp_path / "flickr", "https://farm1.staticflickr.com/1/100_abc.jpg")
    records, expected = contaminated_and_clean()

    def check(out: dict) -> None:
        for i, r in enumerate(records):
            got = out[r.key]
            if expected[i] is None:
                assert got.status is Status.CANDIDATE, (i, got.reject_detail)
            else:
                assert got.reject_reason is RejectReason.EVAL_CONTAMINATION, i
                assert expected[i] in (got.reject_detail or ""), (i, got.reject_detail)
        near = out[records[2].key]
        assert near.reject_limit == 0.8 and near.reject_value == pytest.approx(10 / 12, abs=1e-3)

    config = DedupeConfig(eval_images=(str(split),))
    run(records, Deduplicate(config), check)


def test_a_split_file_that_is_not_one_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"annotations": []}))
    with pytest.raises(Exception, match="not a Karpathy split file"):
        run([record(0, "x y z")], Deduplicate(DedupeConfig(eval_images=(str(bad),))), print)
    with pytest.raises(EvalImagesError):
        from dedupe import load_eval_images

        load_eval_images([str(tmp_path / "missing.json")])


def test_eval_sets_on_a_bucket_are_read_on_the_workers(store: ObjectStore) -> None:
    """An image folder and a Karpathy file on gs:// / s3:// (emulated): same drops as local."""
    fs = store.filesystem()
    images = store.unique_url("eval-images")
    fs.pipe(f"{images}/a/100.jpg", pattern_jpeg(100))
    fs.pipe(f"{images}/notes.txt", b"not an image")
    flickr = store.unique_url("flickr")
    fs.pipe(f"{flickr}/images/200.jpg", pattern_jpeg(200))
    split = {
        "images": [
            {
                "filename": "200.jpg",
                "split": "test",
                "sentences": [{"raw": "Two young men in green shirts play frisbee on a lawn"}],
            }
        ]
    }
    fs.pipe(f"{flickr}/dataset_flickr30k.json", json.dumps(split).encode())
    records = [
        record(0, "words that match nothing at all here", pattern_jpeg(100, quality=60)),
        record(1, "some other words that match nothing", pattern_jpeg(200, quality=60)),
        record(2, "two young men in green shirts play frisbee on a lawn"),
        record(3, "a completely different scene of mountains at dawn", pattern_jpeg(7)),
    ]

    def check(out: dict) -> None:
        reasons = [out[r.key].reject_reason for r in records]
        assert reasons == [RejectReason.EVAL_CONTAMINATION] * 3 + [None]
        assert "100.jpg" in (out[records[0].key].reject_detail or "")
        assert "dataset_flickr30k.json:200.jpg" in (out[records[1].key].reject_detail or "")

    config = DedupeConfig(eval_images=(images, f"{flickr}/dataset_flickr30k.json"))
    run(records, Deduplicate(config), check)
