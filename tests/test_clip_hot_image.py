"""A hot image in the CLIP stage (a site logo under thousands of captions) is spread over
salted sub-keys: no group holds more than ~hot_cap of its records, and every caption is
still scored against the same pixels."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import random

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from dedupe.keep_best import GROUP_SIZE_METRIC
from lait.demo_web import describe_scene, random_scene, render_scene
from lait.record import CaptionSource, Record, Status
from pipeline.clip import DEMO_CLIP_MODEL, ClipConfig, ClipScore

HOT_CAPTIONS, COLD_IMAGES, HOT_CAP = 600, 5, 100


@functools.cache
def _image(i: int) -> tuple[bytes, str]:
    """Image i's JPEG bytes and a caption of it (rendered once per process)."""
    rng = random.Random(f"hot-image-{i}")
    scene = random_scene(rng, 400, 360)
    buffer = io.BytesIO()
    render_scene(scene, texture_seed=i).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), describe_scene(scene, rng)


def _record(pair: tuple[int, int]) -> Record:
    """Caption c of image i; image 0 is the hot one."""
    i, c = pair
    data, caption = _image(i)
    record = Record.candidate(
        source="t",
        url=f"http://h/{i}.jpg",
        caption=f"{caption} {c}",
        caption_source=CaptionSource.ALT,
    )
    return dataclasses.replace(
        record, image=data, image_format="jpg", sha256=hashlib.sha256(data).hexdigest()
    )


PAIRS = [(0, c) for c in range(HOT_CAPTIONS)] + [(i, 0) for i in range(1, COLD_IMAGES + 1)]


def test_hot_image_is_salted_and_every_caption_scored() -> None:
    pipeline = beam.Pipeline(
        runner=FnApiRunner(), options=PipelineOptions(["--direct_running_mode=in_memory"])
    )
    scored = (
        pipeline
        | beam.Create(PAIRS)  # records are built on the workers: Create pickles its values
        | beam.Map(_record)
        | ClipScore(ClipConfig(model=DEMO_CLIP_MODEL, min_score=-1.0), hot_cap=HOT_CAP)
    )
    assert_that(
        scored | "Keys" >> beam.Map(lambda r: r.key),
        equal_to([_record(pair).key for pair in PAIRS]),
        label="EveryRecordOnce",
    )
    assert_that(
        scored
        | "Unscored"
        >> beam.Filter(lambda r: r.clip_score is None or r.status is not Status.CANDIDATE)
        | "Count" >> beam.combiners.Count.Globally(),
        equal_to([0]),
        label="EveryCaptionScored",
    )
    result = pipeline.run()
    result.wait_until_finish()
    sizes = result.metrics().query(MetricsFilter().with_name(GROUP_SIZE_METRIC))["distributions"]
    assert sizes, "the scoring stage reports its group sizes"
    largest = max(d.committed.max for d in sizes)
    groups = sum(d.committed.count for d in sizes)
    # Unsalted, the hot image is one group of 600; salted, ceil(600 / 100) = 6 sub-keys.
    assert largest <= 1.3 * HOT_CAP, largest
    assert groups >= COLD_IMAGES + 6, groups
