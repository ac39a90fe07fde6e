"""Bench: synthetic 64-bit pHashes through the Beam perceptual stage (identical pHashes
collapsed by a combiner, then LSH buckets + clusters, hot buckets through their leaders).

Two cases at each size n (default 100k and 1M), each run in a child process so its peak RSS
is its own, on the local FnApiRunner (what DirectRunner runs batch jobs on):

- uniform: n random hashes, 10% of them planted copies of another with 1-8 bits flipped;
- hot: n copies of one hash plus n hashes within 1-8 bits of it (2n in all: a white or
  flat picture on a million pages, and its re-encodes); every one but one must be dropped.

Printed: wall time, peak RSS and drops per case and size, the uniform cost growth between
the two largest sizes (`growth.time_ratio`), the hot case over the uniform one at the
largest size (`hot_over_uniform`), and a naive all-pairs baseline (numpy, one process)
against the same Beam stage. The last stdout line is one JSON object.

    .venv/bin/python bench/dedupe_scale.py [--sizes 100000,1000000] [--mode in_memory]
    .venv/bin/python bench/dedupe_scale.py --smoke     # ~30 s: small sizes, one process

(Named dedupe_scale, not dedupe: a script's folder comes first on sys.path, and a
bench/dedupe.py would shadow the `dedupe` package for every bench script.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

from dedupe.config import DedupeConfig
from dedupe.perceptual import PerceptualStage
from dedupe.profile import Profile

CHUNK = 10_000
PLANTED_SHARE = 0.1
HOT_HASH = 0x9F3A_5C61_0E7B_D248
CASES = ("uniform", "hot")


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


def near_hashes(seed: int, size: int, centre: int = HOT_HASH) -> np.ndarray:
    """`size` hashes each 1-8 random bits away from `centre`."""
    rng = np.random.default_rng(seed)
    flips = rng.integers(1, 9, size=size)
    out = np.full(size, centre, dtype=np.uint64)
    for i, count in enumerate(flips.tolist()):
        bits = rng.choice(64, size=count, replace=False)
        out[i] ^= np.uint64(sum(1 << int(b) for b in bits))
    return out


def _key(chunk: int, index: int) -> str:
    return f"{chunk:05d}{index:06d}"


def chunk_profiles(case: str, chunk: int, size: int, identical_chunks: int) -> Iterator[Profile]:
    """Profiles of one chunk. Hot: chunks below `identical_chunks` are copies of HOT_HASH,
    the others near it."""
    if case == "uniform":
        hashes, _ = synthetic_hashes(chunk, size)
    elif chunk < identical_chunks:
        hashes = np.full(size, HOT_HASH, dtype=np.uint64)
    else:
        hashes = near_hashes(chunk, size)
    for i, h in enumerate(hashes.tolist()):
        yield Profile(key=_key(chunk, i), phash=int(h))


def run_beam(
    n: int, mode: str, config: DedupeConfig, case: str = "uniform"
) -> tuple[float, dict[str, int]]:
    """Wall seconds of the perceptual stage over a case of size n, and its counters."""
    total = n if case == "uniform" else 2 * n
    chunks = [
        (case, c, min(CHUNK, total - c * CHUNK), (n + CHUNK - 1) // CHUNK)
        for c in range((total + CHUNK - 1) // CHUNK)
    ]
    options = PipelineOptions(
        [f"--direct_running_mode={mode}", f"--direct_num_workers={os.cpu_count() or 1}"]
    )
    started = time.perf_counter()
    pipeline = beam.Pipeline(runner=FnApiRunner(), options=options)
    _, decisions = (
        pipeline
        | "Chunks" >> beam.Create(chunks)
        | "Spread" >> beam.Reshuffle()
        | "Profiles" >> beam.FlatMapTuple(chunk_profiles)
        | "Perceptual" >> PerceptualStage(config)
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


def peak_rss_mb() -> float:
    """This process's peak resident set so far, in MB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def one_case(n: int, case: str, mode: str, probe: bool = True) -> dict[str, object]:
    """One case at one size, in this process: its row."""
    config = DedupeConfig(colour_threshold=None, phash_probe=probe)
    seconds, counters = run_beam(n, mode, config, case)
    total = n if case == "uniform" else 2 * n
    return {
        "case": case,
        "n": n,
        "records": total,
        "seconds": round(seconds, 1),
        "peak_rss_mb": peak_rss_mb(),
        "dropped": counters.get("dropped", 0),
        # the hot case must drop all but one; uniform drops (about) its planted copies
        "expected_dropped": total - 1 if case == "hot" else int(n * PLANTED_SHARE),
        "hot_buckets": counters.get("dedupe.hot_buckets", 0),
        "hot_bucket_unmatched": counters.get("dedupe.hot_bucket_unmatched", 0),
        "hub_nodes": counters.get("dedupe.hub_nodes", 0),
        "unsettled_labels": counters.get("dedupe.unsettled_labels", 0),
        "probe_edges": counters.get("dedupe.probe_edges", 0),
        "probe_unpaired": counters.get("dedupe.probe_unpaired", 0),
    }


def in_child(n: int, case: str, mode: str, probe: bool = True) -> dict[str, object]:
    """`one_case` in a fresh interpreter, so peak RSS is the case's own."""
    command = [sys.executable, __file__, "--one", f"{case}:{n}", "--mode", mode]
    command += [] if probe else ["--no-probe"]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    row: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--mode", default="in_memory", choices=["in_memory", "multi_processing"])
    parser.add_argument("--baseline", type=int, default=10_000)
    parser.add_argument("--cases", default=",".join(CASES), help="uniform,hot")
    parser.add_argument("--smoke", action="store_true", help="small sizes: finishes in seconds")
    parser.add_argument(
        "--no-probe",
        dest="probe",
        action="store_false",
        help="without multi-probe buckets (DedupeConfig.phash_probe=false), to compare",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # CASE:N, run by in_child
    args = parser.parse_args()
    if args.one:
        case, n = args.one.split(":")
        print(json.dumps(one_case(int(n), case, args.mode, args.probe)))
        return
    if args.smoke:  # in this process (peak RSS then covers all cases), no baseline
        args.sizes, args.baseline = "1000,3000", 0
    config = DedupeConfig(colour_threshold=None, phash_probe=args.probe)
    sizes = [int(s) for s in args.sizes.split(",")]
    cases = [c for c in args.cases.split(",") if c]
    out: dict[str, object] = {
        "runner": f"FnApiRunner {args.mode}",
        "smoke": args.smoke,
        "cpus": os.cpu_count(),
        "phash_threshold": config.phash_threshold,
        "phash_bands": config.phash_bands,
        "phash_probe": config.phash_probe,
        "bucket_cap": config.bucket_cap,
        "bucket_leaders": config.bucket_leaders,
        "planted_share": PLANTED_SHARE,
    }
    if args.baseline:
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
    timings: dict[tuple[str, int], float] = {}
    for n in sizes:
        for case in cases:
            row = (
                one_case(n, case, args.mode, args.probe)
                if args.smoke
                else in_child(n, case, args.mode, args.probe)
            )
            timings[(case, n)] = float(row["seconds"])  # type: ignore[arg-type]
            print(json.dumps(row), flush=True)
            out[f"{case}_{n}"] = row
    big = sizes[-1]
    if len(sizes) >= 2 and "uniform" in cases:
        small = sizes[-2]
        out["growth"] = {
            "from": small,
            "to": big,
            "size_ratio": big / small,
            "time_ratio": round(timings[("uniform", big)] / timings[("uniform", small)], 2),
        }
        if "hot" in cases:
            out["hot_growth"] = {
                "from": small,
                "to": big,
                "time_ratio": round(timings[("hot", big)] / timings[("hot", small)], 2),
            }
    if "uniform" in cases and "hot" in cases:
        out["hot_over_uniform"] = round(timings[("hot", big)] / timings[("uniform", big)], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
