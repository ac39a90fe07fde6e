"""Hot keys in dedupe: a million copies of one picture and a million near copies of it go
through the perceptual stage in linear time, on real Beam, and exactly the right ones drop.

A 20k case runs by default; 100k and the 1M + 1M case of issue 19 are slow-marked.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.util import assert_that

from dedupe import DedupeConfig
from dedupe.fingerprint import band_values
from dedupe.keep_best import GROUP_SIZE_METRIC
from dedupe.perceptual import PerceptualStage
from dedupe.profile import Profile
from lait.record import RejectReason

HOT = 0x9F3A_5C61_0E7B_D248
CHUNK = 10_000
THRESHOLD = DedupeConfig().phash_threshold


def _chunk(kind: str, chunk: int, size: int) -> Iterator[Profile]:
    """Profiles of one chunk: "same" = copies of HOT, "near" = 1-8 bits from HOT, "far" =
    random hashes (far from HOT and from each other: checked by the test)."""
    rng = np.random.default_rng(chunk)
    for i in range(size):
        if kind == "same":
            phash = HOT
        elif kind == "near":
            bits = rng.choice(64, size=int(rng.integers(1, 9)), replace=False)
            phash = HOT ^ sum(1 << int(b) for b in bits)
        else:  # redrawn until out of reach of every near copy (8 + threshold bits from HOT)
            phash = HOT
            while (phash ^ HOT).bit_count() <= 8 + THRESHOLD:
                phash = int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2))
        yield Profile(key=f"{kind}{chunk:04d}{i:06d}", phash=phash)


def _far_hashes(chunks: list[tuple[str, int, int]]) -> dict[str, int]:
    return {p.key: p.phash or 0 for c in chunks if c[0] == "far" for p in _chunk(*c)}


def _run_hot(n: int, far: int) -> None:
    chunks = [
        *(("same", c, min(CHUNK, n - c * CHUNK)) for c in range((n + CHUNK - 1) // CHUNK)),
        *(("near", 1000 + c, min(CHUNK, n - c * CHUNK)) for c in range((n + CHUNK - 1) // CHUNK)),
        ("far", 5000, far),
    ]
    far_hashes = _far_hashes(chunks)
    hashes = np.array(list(far_hashes.values()), dtype=np.uint64)
    # ground truth for the far ones: far from HOT, and no two within the threshold
    assert int(np.bitwise_count(hashes ^ np.uint64(HOT)).min()) > 8 + THRESHOLD
    for i in range(len(hashes) - 1):
        assert int(np.bitwise_count(hashes[i + 1 :] ^ hashes[i]).min()) > THRESHOLD

    def check(decisions: list[tuple[str, object]]) -> None:
        dropped = [key for key, _ in decisions]
        assert len(dropped) == len(set(dropped)) == 2 * n - 1
        assert not set(dropped) & set(far_hashes)
        # every profile ranks the same but for its key: the smallest hot key survives
        # ("near..." sorts before "same...")
        assert "near1000000000" not in dropped
        assert {d.reason for _, d in decisions} == {RejectReason.DUPLICATE_PERCEPTUAL}  # type: ignore[attr-defined]
        # one survivor in the end: a drop names it or a record that names it (a copy names
        # its collapsed copy, which names the cluster's survivor)
        survivor_of = {key: d.survivor for key, d in decisions}  # type: ignore[attr-defined]
        for key in dropped:
            seen = 0
            while key in survivor_of and seen < 4:
                key, seen = survivor_of[key], seen + 1
            assert key == "near1000000000"

    options = PipelineOptions(["--direct_running_mode=in_memory"])
    pipeline = beam.Pipeline(runner=FnApiRunner(), options=options)
    _, decisions = (
        pipeline
        | beam.Create(chunks)
        | beam.Reshuffle()
        | beam.FlatMapTuple(_chunk)
        | PerceptualStage(DedupeConfig(colour_threshold=None))
    )
    assert_that(decisions, check)
    result = pipeline.run()
    result.wait_until_finish()
    counters: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter())["counters"]:
        if counter.key.metric.namespace == "lait":  # summed over the steps that count it
            name = counter.key.metric.name
            counters[name] = counters.get(name, 0) + int(counter.committed or 0)
    # the copies never met in one group: the exact stages' per-value choice (keep_best's
    # salted join) held at most about bucket_cap profiles of a value at once
    cap = DedupeConfig().bucket_cap
    sizes = result.metrics().query(MetricsFilter().with_name(GROUP_SIZE_METRIC))["distributions"]
    assert sizes and max(d.committed.max for d in sizes) <= 1.25 * cap
    assert counters["dedupe.hot_buckets"] >= DedupeConfig().phash_bands
    # only far hashes that share a band value with HOT by chance can meet no leader in a hot
    # bucket (after the near copies are absorbed, their buckets may no longer be hot)
    hot_bands = set(band_values(HOT, DedupeConfig().phash_bands))
    by_chance = sum(
        len(hot_bands & set(band_values(h, DedupeConfig().phash_bands)))
        for h in far_hashes.values()
    )
    assert counters.get("dedupe.hot_bucket_unmatched", 0) <= by_chance


def test_copies_and_near_copies_drop_all_but_one() -> None:
    _run_hot(10_000, 1_000)


@pytest.mark.slow
def test_100k_copies_and_near_copies_drop_all_but_one() -> None:
    _run_hot(50_000, 2_000)


@pytest.mark.slow
def test_1m_copies_and_1m_near_copies_drop_all_but_one() -> None:
    _run_hot(1_000_000, 5_000)
