"""`lait featurize`: precompute a dataset folder's region features once, as a Beam job.

Each shard `DATASET/NNNNN.tar` gets a sidecar `DATASET/regions/NNNNN.tar` holding one
`KEY.npz` per sample (`features` R x F, `boxes` R x 5 in 0..1, `class_probs` R x C) in the
format `PrecomputedRegions` reads, so a plan with `regions: {type: precomputed}` trains without
recomputing CLIP every epoch. A sidecar is committed atomically (hidden temporary name, then
rename); an existing one is skipped unless `overwrite`, so a killed job resumes where it
stopped. Undecodable samples are counted (Beam metrics, namespace "lait") and skipped.

The only module of `pretrain` that imports Beam; it never imports `pipeline/`. Without
`--runner` (or with DirectRunner) the job runs on Beam's FnApiRunner, which DirectRunner uses
for batch jobs anyway, skipping DirectRunner's attempt to download Prism (fails offline).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

from lait.dataset import DatasetFolder
from lait.dataset.storage import atomic_output, filesystem
from lait.record import NAMESPACE
from pretrain.regions import RegionsConfig, RegionSource, build_region_source
from pretrain.shards import CorruptSampleError, RawSample, read_shard, sidecar_path

SIDECAR_DIR = "regions"
SPEC_FILE = "spec.json"
_LOCAL_RUNNERS = {None, "DirectRunner", "FnApiRunner"}
_COUNTERS = ("shards", "samples", "skipped", "existing")


def sample_npz(features: np.ndarray, boxes: np.ndarray, class_probs: np.ndarray | None) -> bytes:
    """One sample's regions as the `.npz` bytes `PrecomputedRegions` reads."""
    arrays: dict[str, np.ndarray] = {
        "features": np.ascontiguousarray(features, dtype=np.float32),
        "boxes": np.ascontiguousarray(boxes, dtype=np.float32),
    }
    if class_probs is not None:
        arrays["class_probs"] = np.ascontiguousarray(class_probs, dtype=np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def featurize_samples(
    source: RegionSource, samples: list[RawSample], batch_size: int = 64
) -> tuple[dict[str, bytes], list[str]]:
    """({key: npz bytes} in sample order, keys of the samples that could not be prepared)."""
    out: dict[str, bytes] = {}
    skipped: list[str] = []
    batch: list[tuple[str, dict[str, Any]]] = []

    def flush() -> None:
        if not batch:
            return
        inputs = source.collate([prepared for _, prepared in batch])
        regions = source.encode(inputs, "cpu")
        probs = regions.class_probs
        for i, (key, _) in enumerate(batch):
            valid = regions.mask[i].cpu().numpy().astype(bool)
            out[key] = sample_npz(
                regions.features[i].cpu().numpy()[valid],
                regions.boxes[i].cpu().numpy()[valid],
                None if probs is None else probs[i].cpu().numpy()[valid],
            )
        batch.clear()

    for sample in samples:
        try:
            batch.append((sample.key, source.prepare(sample)))
        except CorruptSampleError:
            skipped.append(sample.key)
            continue
        if len(batch) >= batch_size:
            flush()
    flush()
    return out, skipped


def write_sidecar(path: str, members: dict[str, bytes]) -> None:
    """Commit a sidecar tar of `KEY.npz` members atomically."""
    fs, root = filesystem(path)
    with atomic_output(fs, root) as handle, tarfile.open(fileobj=handle, mode="w|") as tar:
        for key, data in members.items():
            info = tarfile.TarInfo(f"{key}.npz")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


class FeaturizeShard(beam.DoFn):
    """Featurize one shard into its sidecar; the region source is built once per worker."""

    def __init__(
        self,
        regions: RegionsConfig | RegionSource,
        *,
        batch_size: int,
        overwrite: bool,
        sidecar_dir: str,
        device: str,
    ) -> None:
        self.regions = regions
        self.batch_size = batch_size
        self.overwrite = overwrite
        self.sidecar_dir = sidecar_dir
        self.device = device
        self.source: RegionSource | None = None
        self.counters = {
            name: Metrics.counter(NAMESPACE, f"featurize.{name}") for name in _COUNTERS
        }

    def setup(self) -> None:
        if isinstance(self.regions, RegionSource):
            self.source = self.regions
        else:
            self.source = build_region_source(self.regions, device=self.device)

    def _write_spec(self, sidecar: str) -> None:
        """`regions/spec.json` beside the sidecars (same content from every worker)."""
        assert self.source is not None
        fs, root = filesystem(sidecar.rsplit("/", 1)[0] + "/" + SPEC_FILE)
        if self.overwrite or not fs.exists(root):
            data = json.dumps(region_spec(self.source), indent=2, sort_keys=True, default=str)
            with atomic_output(fs, root) as handle:
                handle.write(data.encode())

    def process(self, shard: str) -> Iterator[dict[str, int]]:
        assert self.source is not None
        target = sidecar_path(shard, self.sidecar_dir)
        fs, root = filesystem(target)
        if not self.overwrite and fs.exists(root):
            self.counters["existing"].inc()
            yield {"existing": 1}
            return
        read = read_shard(shard)
        members, skipped = featurize_samples(self.source, read.samples, self.batch_size)
        write_sidecar(target, members)
        self._write_spec(target)
        counts = {"shards": 1, "samples": len(members), "skipped": len(skipped) + read.corrupt}
        for name, value in counts.items():
            self.counters[name].inc(value)
        yield counts


def _runner_and_options(beam_args: list[str]) -> tuple[Any, PipelineOptions]:
    options = PipelineOptions(beam_args)
    runner = options.view_as(StandardOptions).runner
    return (FnApiRunner() if runner in _LOCAL_RUNNERS else runner), options


def _metric_totals(result: Any) -> dict[str, int]:
    totals = dict.fromkeys(_COUNTERS, 0)
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    for counter in query["counters"]:
        name = counter.key.metric.name.removeprefix("featurize.")
        if name in totals:
            value = counter.committed if counter.committed is not None else counter.attempted
            totals[name] += int(value or 0)
    return totals


def region_spec(source: RegionSource) -> dict[str, Any]:
    """What `regions/spec.json` records: the source that produced the features, and the
    `precomputed` settings a plan needs to train on them."""
    return {
        "source": source.spec(),
        "precomputed": {
            "type": "precomputed",
            "feature_dim": source.feature_dim,
            "num_classes": source.num_classes,
            "max_regions": source.max_regions,
        },
    }


def featurize_dataset(
    folder: str,
    regions: RegionsConfig | RegionSource,
    beam_args: list[str] | None = None,
    *,
    batch_size: int = 64,
    overwrite: bool = False,
    device: str = "cpu",
    sidecar_dir: str = SIDECAR_DIR,
) -> dict[str, int]:
    """Precompute the regions of every shard of `folder` into `folder/regions/NNNNN.tar`.

    `regions` is a plan's regions config (built on each worker with the trainer's builder and
    CLIP loader) or a ready region source (pickled to the workers). Returns counts: `shards`
    featurized, `samples` written, `skipped` undecodable samples, `existing` sidecars kept.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    shards = DatasetFolder(folder).shard_paths()
    if not shards:
        raise FileNotFoundError(f"no committed shards in {folder}; featurize a LAIT dataset folder")
    runner, options = _runner_and_options(list(beam_args or []))
    pipeline = beam.Pipeline(runner=runner, options=options)
    _ = (
        pipeline
        | "Shards" >> beam.Create(shards)
        | "Spread" >> beam.Reshuffle()
        | "Featurize"
        >> beam.ParDo(
            FeaturizeShard(
                regions,
                batch_size=batch_size,
                overwrite=overwrite,
                sidecar_dir=sidecar_dir,
                device=device,
            )
        )
    )
    result = pipeline.run()
    result.wait_until_finish()
    return _metric_totals(result)
