"""Precision and recall of the text, language, content and CLIP filters against the demo
web's truth.

    python bench/filter_quality.py [--seed 7] [--images 1200]
    python bench/filter_quality.py --smoke        # a small site: seconds, same JSON keys

Every image reference of a demo site becomes a candidate record (markup noise excluded: the
extractor drops those before any filter); servable images are processed as the download
stage does (decode, filters, resize, re-encode) without HTTP. The records then run through
TextFilters → LanguageFilter → ClipScore → BestCaptionPerImage on a real Beam runner, with
the demo CLIP and the demo content heads (`pipeline.clip.demo_clip_config`), and each
filter's rejections are compared with the noise kinds it targets:

    text:       filename, boilerplate and too-short captions
    language:   non-English captions
    nonnatural: charts, screenshots, slides, logos and text banners (among pairs with an image)
    watermark:  watermarked scenes (among pairs with an image)
    clip:       mismatched captions (among pairs with an image)

The content heads decide before the CLIP threshold (in that order: non-natural, watermark),
so each filter is judged on what the ones before it left; a head is judged by its flag
(probability above its threshold), also where it only scores (`reject: false`).
The heads were trained on images of the demo web's generators, never on a demo site
(`scripts/train_content_heads.py`); the CLIP filter is not judged on the heads' targets.

The default site has 1200 images: 30 of each content kind (noise_rate 0.025), so a figure
moves by about 0.03 per miss or false flag (on 400 images it moved by 0.1).

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
from lait.demo_web.noise import CONTENT_NOISE, MARKUP_NOISE
from lait.record import Record, RejectReason, Stage, Status
from pipeline.clip import BestCaptionPerImage, ClipConfig, ClipScore, demo_clip_config
from pipeline.config import ImageConfig
from pipeline.image import ImageProcessor
from pipeline.langid import LanguageConfig, LanguageFilter
from pipeline.text import TextFilterConfig, TextFilters

TARGETS: dict[str, frozenset[NoiseKind]] = {
    "text": frozenset(
        {NoiseKind.FILENAME_CAPTION, NoiseKind.BOILERPLATE_CAPTION, NoiseKind.TOO_SHORT_CAPTION}
    ),
    "language": frozenset({NoiseKind.NON_ENGLISH_CAPTION}),
    "nonnatural": frozenset({NoiseKind.NON_NATURAL_IMAGE}),
    "watermark": frozenset({NoiseKind.WATERMARKED_IMAGE}),
    "clip": frozenset({NoiseKind.MISMATCHED_CAPTION}),
}
# The rejects each filter gives, in the order the filters meet a record.
REASONS_OF_FILTER: dict[str, frozenset[RejectReason]] = {
    "text": frozenset(r for r in RejectReason if r.stage is Stage.TEXT_FILTER),
    "language": frozenset(r for r in RejectReason if r.stage is Stage.LANGUAGE),
    "nonnatural": frozenset({RejectReason.NONNATURAL_IMAGE}),
    "watermark": frozenset({RejectReason.WATERMARKED_IMAGE}),
    "clip": frozenset({RejectReason.LOW_CLIP_SCORE}),
}
NEEDS_IMAGE = frozenset({"nonnatural", "watermark", "clip"})
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
                | ClipScore(clip or demo_clip_config())  # the demo web's model and heads
                | BestCaptionPerImage()
                | beam.ParDo(_Collect(folder))
            )
        out = [r for path in Path(folder).iterdir() for r in pickle.loads(path.read_bytes())]
    return sorted(out, key=lambda r: r.key)


def _ratio(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 4) if denominator else 1.0


def filter_quality(
    results: list[Record], truth: dict[str, ImageReference], clip: ClipConfig | None = None
) -> dict[str, Any]:
    """Per filter: true/false positives, misses, precision and recall on its targets.

    A filter is judged on the records that reached it (the image filters: those with an
    image); a target that an earlier filter already removed counts as neither a hit nor a
    miss of the later one. NOT_BEST_CAPTION comes after every filter and is none of theirs.
    """
    report: dict[str, Any] = {}
    heads = (clip or demo_clip_config()).content_heads()
    order = list(REASONS_OF_FILTER)
    filter_of = {reason: name for name, reasons in REASONS_OF_FILTER.items() for reason in reasons}
    for name, targets in TARGETS.items():
        tp = fp = fn = 0
        false_positives: list[str] = []
        for record in results:
            noise = truth[record.key].noise
            by = filter_of.get(record.reject_reason) if record.reject_reason else None
            settled_before = record.reject_reason is not None and (
                record.reject_reason is not RejectReason.NOT_BEST_CAPTION
                and (by is None or order.index(by) < order.index(name))
            )
            if settled_before:
                continue
            if name in NEEDS_IMAGE and record.clip_score is None:
                continue
            if name == "clip" and noise & CONTENT_NOISE:
                continue  # a graphic's caption is true but not of a scene: the heads' targets
            hit = by == name
            if name in heads:  # a head is judged by its flag, whether or not it rejects
                probability = getattr(record, f"p_{name}")
                hit = probability is not None and probability > heads[name].threshold
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
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--smoke", action="store_true", help="a 60-image site (seconds)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images = 60
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
