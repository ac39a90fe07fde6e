"""Bench: synthetic 64-bit pHashes through the Beam near-duplicate stage (LSH + clusters).

Measures wall time at each size (default 100k and 1M) on the local FnApiRunner (what
DirectRunner runs batch jobs on), the cost growth between the two largest sizes, and a
naive all-pairs baseline (numpy, one process) against the same Beam stage at 10k. 10% of
the hashes are planted copies of another hash with 1-8 bits flipped; recall counts the
copies that end in their original's cluster. The last stdout line is one JSON object.

    .venv/bin/python bench/dedupe_scale.py [--sizes 100000,1000000] [--mode in_memory]

(Named dedupe_scale, not dedupe: a script's folder comes first on sys.path, and a
bench/dedupe.py would shadow the `dedupe` package for every bench script.)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

from dedupe.config import DedupeConfig
from dedupe.perceptual import PerceptualEdges
from dedupe.profile import Profile
from dedupe.stages import SimilarityStage
from lait.record import RejectReason

CHUNK = 10_000
PLANTED_SHARE = 0.1


def synthetic_hashes(chunk: int, size: int) -> tuple[np.ndarray, dict[int, int]]:
    """`size` hashes for one chunk and {copy index: original index} of the planted copies."""
    rng = np.random.default_rng(chunk)
    hashes = rng.integers(0, 2**64, size=size, dtype=np.uint64)
    planted = {}
    n_copies = int(size * PLANTED_SHARE)
    copies = rng.choice(np.arange(size // 2, size), size=n_copies, replace=False)
    for copy in copies.tolist():
        original = int(rng.integers(0, size // 2))
        flips = rng.choice(64, size=int(rng.integers(1, 9)), replace=False)
        mask = np.uint64(sum(1 << int(b) for b in flips))
        hashes[copy] = hashes[original] ^ mask
        planted[copy] = original
    return hashes, planted


def _key(chunk: int, index: int) -> str:
    return f"{chunk:05d}{index:06d}"


def chunk_profiles(chunk: int, size: int) -> Iterator[Profile]:
    hashes, _ = synthetic_hashes(chunk, size)
    for i, h in enumerate(hashes.tolist()):
        yield Profile(key=_key(chunk, i), phash=int(h))


def run_beam(n: int, mode: str, config: DedupeConfig) -> tuple[float, dict[str, int]]:
    """Wall seconds of the near-duplicate stage over n synthetic hashes, and its counters."""
    chunks = [(c, min(CHUNK, n - c * CHUNK)) for c in range((n + CHUNK - 1) // CHUNK)]
    options = PipelineOptions(
        [f"--direct_running_mode={mode}", f"--direct_num_workers={os.cpu_count() or 1}"]
    )
    started = time.perf_counter()
    pipeline = beam.Pipeline(runner=FnApiRunner(), options=options)
    edges = PerceptualEdges(config.phash_threshold, config.phash_bands, None, config.block_size)
    _, decisions = (
        pipeline
        | "Chunks" >> beam.Create(chunks)
        | "Spread" >> beam.Reshuffle()
        | "Profiles" >> beam.FlatMapTuple(chunk_profiles)
        | "NearImage"
        >> SimilarityStage(
            edges, RejectReason.DUPLICATE_PERCEPTUAL, "bench", config.component_rounds
        )
    )
    _ = decisions | "Count" >> beam.Map(lambda _: Metrics.counter("bench", "dropped").inc())
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - started
    counters = {
        c.key.metric.name: int(c.committed or c.attempted or 0)
        for c in result.metrics().query(MetricsFilter())["counters"]
        if c.key.metric.namespace in ("bench", "lait")
    }
    return seconds, counters


def naive_pairs(hashes: np.ndarray, threshold: int) -> tuple[float, int]:
    """All-pairs Hamming in numpy (row by row): seconds and pairs within the threshold."""
    started = time.perf_counter()
    pairs = 0
    for i in range(len(hashes) - 1):
        distance = np.bitwise_count(hashes[i + 1 :] ^ hashes[i])
        pairs += int(np.count_nonzero(distance <= threshold))
    return time.perf_counter() - started, pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--mode", default="in_memory", choices=["in_memory", "multi_processing"])
    parser.add_argument("--baseline", type=int, default=10_000)
    args = parser.parse_args()
    config = DedupeConfig()
    sizes = [int(s) for s in args.sizes.split(",")]
    out: dict[str, object] = {
        "runner": f"FnApiRunner {args.mode}",
        "cpus": os.cpu_count(),
        "phash_threshold": config.phash_threshold,
        "phash_bands": config.phash_bands,
        "planted_share": PLANTED_SHARE,
    }
    hashes, planted = synthetic_hashes(0, args.baseline)
    naive_s, naive_found = naive_pairs(hashes, config.phash_threshold)
    beam_s, counters = run_beam(args.baseline, args.mode, config)
    out["baseline"] = {
        "n": args.baseline,
        "naive_all_pairs_s": round(naive_s, 2),
        "naive_pairs_within_threshold": naive_found,
        "planted_copies": len(planted),
        "beam_s": round(beam_s, 2),
        "beam_dropped": counters.get("dropped", 0),
        "beam_over_naive": round(beam_s / naive_s, 2),
    }
    print(json.dumps(out["baseline"]), flush=True)
    timings = {}
    for n in sizes:
        seconds, counters = run_beam(n, args.mode, config)
        timings[n] = seconds
        row = {
            "n": n,
            "seconds": round(seconds, 1),
            "dropped": counters.get("dropped", 0),
            "planted_copies": int(n * PLANTED_SHARE),
            "unsettled_labels": counters.get("dedupe.unsettled_labels", 0),
        }
        print(json.dumps(row), flush=True)
        out[f"n_{n}"] = row
    if len(sizes) >= 2:
        small, big = sizes[-2], sizes[-1]
        out["growth"] = {
            "from": small,
            "to": big,
            "size_ratio": big / small,
            "time_ratio": round(timings[big] / timings[small], 2),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
