"""Precision and recall of the text, language and CLIP filters against the demo web's truth.

    python bench/filter_quality.py [--seed 7] [--images 400]

Every image reference of a demo site becomes a candidate record (markup noise excluded: the
extractor drops those before any filter); servable images are processed as the download
stage does (decode, filters, resize, re-encode) without HTTP. The records then run through
TextFilters → LanguageFilter → ClipScore → BestCaptionPerImage on a real Beam runner, and
each filter's rejections are compared with the noise kinds it targets:

    text:     filename, boilerplate and too-short captions
    language: non-English captions
    clip:     mismatched captions (among pairs with an image)

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import pickle
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lait.demo_web import DemoSite, ImageReference, NoiseKind, build_site
from lait.demo_web.noise import MARKUP_NOISE
from lait.record import Record, RejectReason, Stage, Status
from pipeline.clip import DEMO_CLIP_MODEL, BestCaptionPerImage, ClipConfig, ClipScore
from pipeline.config import ImageConfig
from pipeline.image import ImageProcessor
from pipeline.langid import LanguageConfig, LanguageFilter
from pipeline.text import TextFilterConfig, TextFilters

TARGETS: dict[str, frozenset[NoiseKind]] = {
    "text": frozenset(
        {NoiseKind.FILENAME_CAPTION, NoiseKind.BOILERPLATE_CAPTION, NoiseKind.TOO_SHORT_CAPTION}
    ),
    "language": frozenset({NoiseKind.NON_ENGLISH_CAPTION}),
    "clip": frozenset({NoiseKind.MISMATCHED_CAPTION}),
}
STAGE_OF_FILTER = {"text": Stage.TEXT_FILTER, "language": Stage.LANGUAGE, "clip": Stage.CLIP}
_BASE = "http://127.0.0.1:8000"


def beam_pipeline() -> beam.Pipeline:
    """An in-process portable runner (DirectRunner would fetch Prism)."""
    return beam.Pipeline(
        runner=FnApiRunner(), options=PipelineOptions(["--direct_running_mode=in_memory"])
    )


def demo_records(site: DemoSite) -> tuple[list[Record], dict[str, ImageReference]]:
    """A candidate per reference (with processed image bytes where one is served), and
    the reference of each record key."""
    processor = ImageProcessor(ImageConfig())
    records, truth = [], {}
    for ref in site.ground_truth.references:
        if ref.noise & MARKUP_NOISE:
            continue
        record = Record.candidate(
            source=ref.source,
            url=_BASE + ref.url,
            caption=ref.caption,
            caption_source=ref.caption_source,
            page_url=_BASE + ref.page_url if ref.page_url else None,
        )
        resource = site.lookup(ref.final_url or ref.url)
        servable = ref.image_format is not None and resource is not None and resource.status == 200
        if servable and resource is not None:
            processed = processor.process(dataclasses.replace(record, image=resource.body))
            if processed.status is Status.CANDIDATE:
                record = processed  # image-stage rejects stay plain candidates without pixels
        records.append(record)
        truth[record.key] = ref
    return records, truth


class _Collect(beam.DoFn):
    """Pickles each bundle's records into `folder` (works with any local runner mode)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def start_bundle(self) -> None:
        self.buffer: list[Record] = []

    def process(self, record: Record) -> None:
        self.buffer.append(record)

    def finish_bundle(self) -> None:
        if self.buffer:
            path = Path(self.folder) / f"{uuid.uuid4().hex}.pickle"
            path.write_bytes(pickle.dumps(self.buffer))


class _AttachImage(beam.DoFn):
    """Puts back the image bytes parked in `folder` (as the download stage would add them):
    big values in `beam.Create` make the runner crawl, files do not."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def process(self, record: Record) -> Iterator[Record]:
        path = Path(self.folder) / record.key
        yield dataclasses.replace(record, image=path.read_bytes()) if path.exists() else record


class Collected:
    """Records gathered from pipeline branches (see `collect`), readable after the run."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def add(self, records: beam.PCollection) -> None:
        """Gather `records` when the pipeline runs."""
        _ = records | f"Collect{uuid.uuid4().hex[:8]}" >> beam.ParDo(_Collect(self.folder))

    def read(self) -> list[Record]:
        """Everything gathered, in key order (call after the pipeline has run)."""
        return sorted(
            (r for path in Path(self.folder).iterdir() for r in pickle.loads(path.read_bytes())),
            key=lambda r: (r.key, r.status),
        )


@contextlib.contextmanager
def collect() -> Iterator[Collected]:
    """`with collect() as out:` run a pipeline that calls `out.add(pcoll)`, then `out.read()`."""
    with tempfile.TemporaryDirectory() as folder:
        yield Collected(folder)


def run_filters(
    records: Iterable[Record],
    text: TextFilterConfig | None = None,
    language: LanguageConfig | None = None,
    clip: ClipConfig | None = None,
) -> list[Record]:
    """The four transforms, in the graph's order, on a real Beam runner."""
    with tempfile.TemporaryDirectory() as images, tempfile.TemporaryDirectory() as folder:
        light = []
        for record in records:
            if record.image is not None:
                (Path(images) / record.key).write_bytes(record.image)
            light.append(dataclasses.replace(record, image=None))
        with beam_pipeline() as pipeline:
            _ = (
                pipeline
                | beam.Create(light, reshuffle=False)
                | beam.ParDo(_AttachImage(images))
                | TextFilters(text)
                | LanguageFilter(language)
                | ClipScore(clip or ClipConfig(model=DEMO_CLIP_MODEL))  # the demo web's model
                | BestCaptionPerImage()
                | beam.ParDo(_Collect(folder))
            )
        out = [r for path in Path(folder).iterdir() for r in pickle.loads(path.read_bytes())]
    return sorted(out, key=lambda r: r.key)


def _ratio(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 4) if denominator else 1.0


def filter_quality(results: list[Record], truth: dict[str, ImageReference]) -> dict[str, Any]:
    """Per filter: true/false positives, misses, precision and recall on its targets.

    A filter is judged on the records that reached it (the CLIP filter: those with an
    image); a target that an earlier filter already removed counts as neither a hit nor a
    miss of the later one.
    """
    report: dict[str, Any] = {}
    order = [Stage.TEXT_FILTER, Stage.LANGUAGE, Stage.CLIP]
    for name, targets in TARGETS.items():
        stage = STAGE_OF_FILTER[name]
        tp = fp = fn = 0
        false_positives: list[str] = []
        for record in results:
            noise = truth[record.key].noise
            settled_before = record.reject_stage is not None and (
                record.reject_stage not in order
                or order.index(record.reject_stage) < order.index(stage)
            )
            if settled_before:
                continue
            if name == "clip" and record.clip_score is None:
                continue
            hit = (
                record.reject_stage is stage
                and record.reject_reason is not RejectReason.NOT_BEST_CAPTION
            )
            target = bool(noise & targets)
            tp += hit and target
            fn += target and not hit
            if hit and not target:
                fp += 1
                false_positives.append(
                    f"{record.caption!r}: {record.reject_reason} {record.reject_detail}"
                )
        report[name] = {
            "targets": tp + fn,
            "true_positives": tp,
            "false_positives": fp,
            "misses": fn,
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "false_positive_examples": false_positives[:5],
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--images", type=int, default=400)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    site = build_site(seed=args.seed, n_images=args.images)
    built = time.perf_counter()
    records, truth = demo_records(site)
    prepared = time.perf_counter()
    results = run_filters(records)
    print(
        f"site {built - started:.1f}s, records {prepared - built:.1f}s, "
        f"filters {time.perf_counter() - prepared:.1f}s"
    )
    report = filter_quality(results, truth)
    reasons: dict[str, int] = {}
    for record in results:
        reason = str(record.reject_reason) if record.reject_reason else "passed"
        reasons[reason] = reasons.get(reason, 0) + 1
    for name, figures in report.items():
        print(
            f"{name:9s} targets {figures['targets']:4d}  precision {figures['precision']:.4f}  "
            f"recall {figures['recall']:.4f}  (fp {figures['false_positives']}, "
            f"misses {figures['misses']})"
        )
    summary = {
        "seed": args.seed,
        "images": args.images,
        "records": len(results),
        "seconds": round(time.perf_counter() - started, 1),
        "outcomes": dict(sorted(reasons.items())),
        **{f"{n}_{k}": v[k] for n, v in report.items() for k in ("precision", "recall", "targets")},
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
