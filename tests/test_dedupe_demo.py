"""Deduplicate on real Beam against the demo web's planted duplicates (its ground truth)."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

from dedupe import Decontaminate, DedupeConfig, Deduplicate
from dedupe.profile import record_order
from lait.dataset import DatasetFolder, DatasetWriter, check_stats
from lait.demo_web import NoiseKind, build_site
from lait.record import CaptionSource, Record, RejectReason, Status
from pipeline.config import ImageConfig
from pipeline.dedupe_job import dedupe_dataset
from pipeline.image import ImageProcessor

IN_PROCESS = ["--direct_running_mode=in_memory"]
BASE = "http://demo.test"
DUPLICATE_REASONS = {r for r in RejectReason if r.value.startswith("duplicate_")}


def _clip(key: str) -> float | None:
    """A deterministic stand-in CLIP score (some missing) so the keep policy has work."""
    byte = hashlib.sha256(key.encode()).digest()[0]
    return None if byte < 40 else round(byte / 255, 3)


@dataclasses.dataclass
class Demo:
    records: list[Record]
    group: dict[str, str]  # key → ground-truth image (the original's image_id for copies)
    planted: dict[str, str]  # key of a planted copy → "exact" | "near"
    site_images: dict[str, bytes]  # image_id → served bytes


def demo_records(seed: int, n_images: int) -> Demo:
    """Processed records of every fetchable demo image, with their ground truth."""
    site = build_site(seed=seed, n_images=n_images)
    processor = ImageProcessor(ImageConfig())
    demo = Demo([], {}, {}, {})
    for ref in site.ground_truth.references:
        resource = site.lookup(ref.url) if ref.url.startswith("/") else None
        if resource is None or resource.status != 200 or resource.redirect_to is not None:
            continue
        if not resource.content_type.startswith("image/") or ref.image_id is None:
            continue
        candidate = Record.candidate(
            source=ref.source,
            url=BASE + ref.url,
            caption=ref.caption,
            caption_source=ref.caption_source,
            page_url=ref.page_url,
        )
        record = processor.process(dataclasses.replace(candidate, image=resource.body))
        if record.status is Status.REJECTED:
            continue
        demo.records.append(dataclasses.replace(record, clip_score=_clip(record.key)))
        demo.group[record.key] = ref.duplicate_of or ref.image_id
        demo.site_images[ref.image_id] = resource.body
        if NoiseKind.EXACT_DUPLICATE in ref.noise:
            demo.planted[record.key] = "exact"
        elif NoiseKind.NEAR_DUPLICATE in ref.noise:
            demo.planted[record.key] = "near"
    return demo


class _WriteBundles(beam.DoFn):
    """Each bundle's records pickled into a file of its own under `folder`: a sink that works
    whichever process runs the bundle."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._records: list[Record] = []

    def start_bundle(self) -> None:
        self._records = []

    def process(self, record: Record) -> None:
        self._records.append(record)

    def finish_bundle(self) -> None:
        if self._records:
            path = Path(self.folder) / f"{uuid.uuid4().hex}.pickle"
            path.write_bytes(pickle.dumps(self._records))


def _read_records(path: str) -> list[Record]:
    records: list[Record] = pickle.loads(Path(path).read_bytes())
    return records


def run_transform(records: Iterable[Record], transform: beam.PTransform) -> list[Record]:
    """Records through `transform` on the FnApiRunner, in and out through files (beam.Create
    of records holding image bytes is very slow, as Create pickles its input element-wise)."""
    with tempfile.TemporaryDirectory() as folder:
        source, sink = Path(folder) / "in.pickle", Path(folder) / "out"
        source.write_bytes(pickle.dumps(list(records)))
        sink.mkdir()
        with beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions(IN_PROCESS)) as pipeline:
            _ = (
                pipeline
                | beam.Create([str(source)])
                | beam.FlatMap(_read_records)
                | transform
                | beam.ParDo(_WriteBundles(str(sink)))
            )
        return [r for path in sorted(sink.iterdir()) for r in _read_records(str(path))]


def final_survivor(key: str, by_key: dict[str, Record]) -> str:
    """Follow `duplicate_of` to the record that stayed."""
    seen = {key}
    while (nxt := by_key[key].duplicate_of) is not None and nxt not in seen:
        seen.add(nxt)
        key = nxt
    return key


def evaluate(demo: Demo, out: list[Record]) -> dict[str, Any]:
    """Recall per planted kind and precision of duplicate drops, from the ground truth."""
    by_key = {r.key: r for r in out}
    final = {k: final_survivor(k, by_key) for k in by_key}
    originals: dict[str, set[str]] = {}
    for key, group in demo.group.items():
        if key not in demo.planted:
            originals.setdefault(group, set()).add(final[key])
    found: dict[str, list[bool]] = {"exact": [], "near": []}
    for key, kind in demo.planted.items():
        found[kind].append(final[key] in originals.get(demo.group[key], set()))
    drops = [r for r in out if r.reject_reason in DUPLICATE_REASONS]
    wrong = [r for r in drops if demo.group[r.key] != demo.group[r.duplicate_of or ""]]
    near = [r for r in drops if r.reject_reason is RejectReason.DUPLICATE_PERCEPTUAL]
    near_wrong = [r for r in wrong if r.reject_reason is RejectReason.DUPLICATE_PERCEPTUAL]
    return {
        "exact_recall": sum(found["exact"]) / len(found["exact"]),
        "near_recall": sum(found["near"]) / len(found["near"]),
        "planted": {k: len(v) for k, v in found.items()},
        "precision": 1 - len(wrong) / len(drops),
        "near_precision": 1 - len(near_wrong) / max(1, len(near)),
        "drops": len(drops),
        "final": final,
    }


@pytest.fixture(scope="module")
def demo() -> Demo:
    return demo_records(seed=3, n_images=600)


@pytest.fixture(scope="module")
def deduped(demo: Demo) -> list[Record]:
    return run_transform(demo.records, Deduplicate(DedupeConfig()))


def test_planted_duplicates_are_found_precisely(demo: Demo, deduped: list[Record]) -> None:
    scores = evaluate(demo, deduped)
    print({k: v for k, v in scores.items() if k != "final"})
    assert scores["planted"]["exact"] >= 10 and scores["planted"]["near"] >= 10
    assert scores["exact_recall"] == 1.0
    # Measured 15/15 on this site (14/15 without phash_probe: the miss is a pair 10 bits apart
    # that shares no LSH band, which probing the neighbouring buckets finds).
    assert scores["near_recall"] >= 0.99
    assert scores["precision"] >= 0.99 and scores["near_precision"] >= 0.99


def test_nothing_is_lost_and_every_drop_names_its_survivor(
    demo: Demo, deduped: list[Record]
) -> None:
    assert sorted(r.key for r in deduped) == sorted(r.key for r in demo.records)
    kept = {r.key for r in deduped if r.status is Status.CANDIDATE}
    for record in deduped:
        if record.status is Status.REJECTED:
            assert record.reject_reason in DUPLICATE_REASONS and record.image is None
            assert record.duplicate_of in {r.key for r in deduped}
        else:
            assert record.image is not None
    assert len(kept) < len(deduped)


def test_survivors_follow_the_keep_policy(demo: Demo, deduped: list[Record]) -> None:
    by_key = {r.key: r for r in deduped}
    inputs = {r.key: r for r in demo.records}
    checked = 0
    for record in deduped:
        if record.status is Status.REJECTED:
            survivor = final_survivor(record.key, by_key)
            assert by_key[survivor].status is Status.CANDIDATE
            assert record_order(inputs[survivor]) <= record_order(inputs[record.key])
            checked += 1
    assert checked >= 20


def test_rejected_records_pass_through_unchanged(demo: Demo) -> None:
    already = demo.records[0].rejected(RejectReason.TOO_SMALL, "given")
    out = run_transform([already, *demo.records[1:5]], Deduplicate(DedupeConfig()))
    assert already in out and len(out) == 5


def test_caption_dedupe_catches_spam_and_is_off_by_default(demo: Demo) -> None:
    spam = [
        dataclasses.replace(
            Record.candidate(
                source="spam",
                url=f"{BASE}/shop/{i}.jpg",
                caption=f"Buy {i} cheap designer watches now at shop {i * 7} with free shipping",
                caption_source=CaptionSource.ALT,
            ),
            clip_score=0.2,
        )
        for i in range(5)
    ]
    config = DedupeConfig(url=False, sha256=False, perceptual=False, caption=True)
    out = run_transform(demo.records + spam, Deduplicate(config))
    dropped = [r for r in out if r.reject_reason is RejectReason.DUPLICATE_CAPTION]
    wrong = [r for r in dropped if r.source != "spam"]
    print(f"caption false drops on {len(demo.records)} demo records: {len(wrong)}")
    assert sorted(r.source for r in dropped if r.source == "spam") == ["spam"] * 4
    # The demo's captions are templated by design: different pictures share a caption word
    # for word ("a single small red circle on a plain background"), so caption dedupe drops
    # some (34 of 795 measured). That is why it is off by default.
    assert len(wrong) <= 0.06 * len(demo.records)
    assert not DedupeConfig().caption


def test_decontamination_drops_matches_of_eval_images(demo: Demo, tmp_path: Path) -> None:
    originals = {demo.group[k] for k, kind in demo.planted.items() if kind == "near"}
    chosen = sorted(originals)[:3]
    for image_id in chosen:
        (tmp_path / f"{image_id}.jpg").write_bytes(demo.site_images[image_id])
    out = run_transform(demo.records, Decontaminate(paths=[str(tmp_path)]))
    hits = [r for r in out if r.reject_reason is RejectReason.EVAL_CONTAMINATION]
    assert hits and {demo.group[r.key] for r in hits} == set(chosen)
    assert all(r.reject_detail and "evaluation image" in r.reject_detail for r in hits)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("probe", "bar"),
    # measured: 75/75 by default (multi-probe buckets), 73/75 with phash_probe=false (the
    # misses: pairs 10 bits apart that share no band); no wrong drop in either (the colour
    # check compares slight crops, which caught the crop copies the plain 8x8 thumbnail refused)
    [(True, 0.99), (False, 0.95)],
)
def test_near_duplicate_recall_and_precision_pooled_over_demo_webs(
    demo: Demo, probe: bool, bar: float
) -> None:
    """Near recall and precision (>= 0.99) on 75 planted near-duplicates from five demo webs:
    one site plants only 15, so a single miss there moves its recall by 0.067."""
    assert DedupeConfig().phash_probe
    config = DedupeConfig(phash_probe=probe)
    found = planted = drops = wrong = 0
    for seed, site in [(3, demo), *((s, None) for s in (0, 1, 2, 4))]:
        records = site or demo_records(seed=seed, n_images=600)
        scores = evaluate(records, run_transform(records.records, Deduplicate(config)))
        assert scores["exact_recall"] == 1.0, seed
        near = scores["planted"]["near"]
        planted += near
        found += round(scores["near_recall"] * near)
        drops += scores["drops"]
        wrong += round((1 - scores["precision"]) * scores["drops"])
    print(f"probe={probe}: near recall {found}/{planted}, wrong drops {wrong}/{drops}")
    assert planted >= 75
    assert found / planted >= bar
    assert 1 - wrong / drops >= 0.99


def _write(folder: Path, records: list[Record]) -> None:
    with DatasetWriter(folder, samples_per_shard=50) as writer:
        for record in records:
            writer.write(record.accepted_if_live())


def test_dedupe_dataset_across_folders_loses_nothing(demo: Demo, tmp_path: Path) -> None:
    records = sorted(demo.records, key=lambda r: r.key)[:160]
    half = len(records) // 2
    first = records[: half + 20]  # 20 records in both folders: same keys
    second = [*records[half:], records[0].rejected(RejectReason.TOO_SMALL, "old reject")]
    _write(tmp_path / "a", first)
    _write(tmp_path / "b", second)
    stats = dedupe_dataset(
        [str(tmp_path / "a"), str(tmp_path / "b")],
        str(tmp_path / "out"),
        DedupeConfig(),
        IN_PROCESS,
        samples_per_shard=40,
    )
    check_stats(stats)
    assert stats["candidates"] == len(first) + len(second)
    assert stats["reasons"]["duplicate_url_caption"] == 20
    assert stats["reasons"]["too_small"] == 1
    folder = DatasetFolder(tmp_path / "out")
    samples = list(folder.iter_samples())
    assert len(samples) == stats["accepted"] and all(s.image for s in samples)
    assert len({s.key for s in samples}) == len(samples)
