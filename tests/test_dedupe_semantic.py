"""Semantic dedupe (SemDeDup style) on real Beam: near-identical embeddings collapse to the
best-ranked record; distinct ones stay."""

from __future__ import annotations

import dataclasses
import math

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.util import assert_that

from dedupe import DedupeConfig, Deduplicate
from lait.record import CaptionSource, Record, RejectReason, Status


def _records_and_embeddings() -> tuple[list[Record], list[tuple[str, np.ndarray]], dict[str, int]]:
    rng = np.random.default_rng(0)
    records, embeddings, group = [], [], {}
    for g in range(16):
        centre = rng.normal(size=32)
        members = 3 if g < 8 else 1  # 8 triplets of near-copies, 8 loners
        for m in range(members):
            record = dataclasses.replace(
                Record.candidate(
                    source="t",
                    url=f"http://h/{g}-{m}.jpg",
                    caption=f"c {g} {m}",
                    caption_source=CaptionSource.ALT,
                ),
                clip_score=round(0.5 + 0.1 * m, 2),
                original_width=400,
                original_height=400,
            )
            vector = centre + rng.normal(scale=0.02, size=32)
            records.append(record)
            embeddings.append((record.key, (vector / np.linalg.norm(vector)).astype(np.float32)))
            group[record.key] = g
    return records, embeddings, group


@pytest.mark.parametrize(
    ("clusters", "cap"),
    # four ordinary clusters; then all 32 embeddings in one hot cluster over a cap of 8
    [(4, 4096), (1, 8)],
)
def test_semantic_duplicates_collapse_to_the_best_ranked(clusters: int, cap: int) -> None:
    records, embeddings, group = _records_and_embeddings()
    config = DedupeConfig(
        url=False,
        sha256=False,
        perceptual=False,
        semantic=True,
        semantic_threshold=0.95,
        semantic_clusters=clusters,
        semantic_cluster_cap=cap,
    )

    def check(output: list[Record]) -> None:
        out = {r.key: r for r in output}
        assert set(out) == {r.key for r in records} and len(output) == len(records)  # none lost
        dropped = [r for r in out.values() if r.status is Status.REJECTED]
        assert len(dropped) == 16  # two of each triplet
        for record in dropped:
            assert record.reject_reason is RejectReason.DUPLICATE_SEMANTIC
            survivor = out[record.duplicate_of or ""]
            assert group[survivor.key] == group[record.key]
            assert survivor.status is Status.CANDIDATE
            assert (survivor.clip_score or 0) > (record.clip_score or 0)  # keep policy
            assert record.reject_limit == 0.95 and (record.reject_value or 0) >= 0.95
        kept_groups = sorted(group[r.key] for r in out.values() if r.status is Status.CANDIDATE)
        assert kept_groups == list(range(16))

    options = PipelineOptions(["--direct_running_mode=in_memory"])
    pipeline = beam.Pipeline(runner=FnApiRunner(), options=options)
    vectors = pipeline | "Vectors" >> beam.Create(embeddings)
    out = pipeline | "Records" >> beam.Create(records) | Deduplicate(config, embeddings=vectors)
    assert_that(out, check)
    result = pipeline.run()
    result.wait_until_finish()
    metrics = result.metrics().query(MetricsFilter().with_namespace("lait"))
    hot = sum(
        c.committed for c in metrics["counters"] if c.key.metric.name.endswith("hot_clusters")
    )
    (sizes,) = [
        d.committed for d in metrics["distributions"] if "semantic_group" in d.key.metric.name
    ]
    if cap >= len(records):
        assert hot == 0 and sizes.count == clusters and sizes.max <= len(records)
    else:  # split into blocks of about `cap`: one group per pair of blocks, none holds all
        blocks = math.ceil(len(records) / cap)
        assert hot == 1 and sizes.count == blocks * (blocks + 1) // 2
        assert sizes.max < len(records) and sizes.sum == blocks * len(records)
