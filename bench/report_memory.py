"""Peak memory and time of `lait report` on a large synthetic metadata-only dataset folder.

Builds a folder of N accepted samples (parquet shards of 1,000; real small tars for the first
few shards only, so galleries have pixels to show) plus N/2 rejects of every stage, with
stats.json and sizes.json from the real writer functions. Then, each in a fresh child process:
- baseline: import the report code and exit (the floor every run pays);
- peer: pandas.read_parquet of all metadata and the rejects ledger (the obvious way to get
  exact figures: hold everything);
- report: `write_report` on the folder, at N/10 and at N samples, to show memory does not
  grow with the dataset.
Prints a table, then one JSON object on the last line.

    .venv/bin/python bench/report_memory.py [--samples 200000] [--keep DIR]
    .venv/bin/python bench/report_memory.py --smoke     # 2,000 samples: seconds
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from lait.dataset import layout
from lait.dataset.schema import METADATA_SCHEMA
from lait.dataset.stats import compute_stats, write_stats
from lait.dataset.writer import write_sizes
from lait.record import RejectReason, Status, img2dataset_status_of

SHARD_SIZE = 1000
SHARDS_WITH_TARS = 3
LANGUAGES = ["en", "en", "en", "de", "fr", "es", "ja", "zh", None]
WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "red",
    "blue",
    "small",
    "large",
    "dog",
    "cat",
    "house",
    "tree",
    "car",
    "street",
    "view",
    "at",
    "night",
]


def _captions(rng: np.random.Generator, n: int) -> list[str]:
    lengths = rng.integers(2, 30, n)
    picks = rng.integers(0, len(WORDS), int(lengths.sum()))
    out, at = [], 0
    for length in lengths:
        out.append(" ".join(WORDS[i] for i in picks[at : at + length]))
        at += length
    return out


def _rows(rng: np.random.Generator, start: int, n: int, status: str) -> dict[str, list]:
    numbers = range(start, start + n)
    width = rng.integers(64, 1600, n)
    height = rng.integers(64, 1600, n)
    language = [LANGUAGES[i] for i in rng.integers(0, len(LANGUAGES), n)]
    return {
        "key": [f"{i:024x}" for i in numbers],
        "source": ["web" if i % 4 else "cc-list" for i in numbers],
        "url": [f"https://host{i % 7919}.example/img/{i}.jpg" for i in numbers],
        "caption": _captions(rng, n),
        "caption_source": ["alt" if i % 5 else "title" for i in numbers],
        "page_url": [f"https://host{i % 7919}.example/page/{i // 10}.html" for i in numbers],
        "sighting_id": [f"{i:024x}" for i in numbers],
        "image_format": ["jpg"] * n,
        "width": width.tolist(),
        "height": height.tolist(),
        "original_width": (width * 2).tolist(),
        "original_height": (height * 2).tolist(),
        "num_bytes": rng.integers(2_000, 900_000, n).tolist(),
        "sha256": [None] * n,
        "phash": [None] * n,
        "language": language,
        "language_score": [None if x is None else 0.95 for x in language],
        "clip_score": np.clip(rng.normal(0.33, 0.04, n), 0.28, None).round(4).tolist(),
        "status": [status] * n,
        "reject_stage": [None] * n,
        "reject_reason": [None] * n,
        "reject_detail": [None] * n,
        "reject_value": [None] * n,
        "reject_limit": [None] * n,
        "duplicate_of": [None] * n,
        "exif": [None] * n,
        "error_message": [None] * n,
        "img2dataset_status": ["success" if status == "accepted" else None] * n,
    }


def _table(rows: dict[str, list[Any]]) -> pa.Table:
    """`rows` as a metadata table; columns the schema has and `_rows` does not know (a newer
    optional column) are null, so the bench keeps running as the schema grows."""
    n = len(rows["key"])
    columns = {
        field.name: rows[field.name] if field.name in rows else pa.nulls(n, field.type)
        for field in METADATA_SCHEMA
    }
    return pa.Table.from_pydict(columns, schema=METADATA_SCHEMA)


def _tar(path: Path, keys: list[str], captions: list[str], images: list[bytes]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, (key, caption) in enumerate(zip(keys, captions, strict=True)):
            for name, data in (
                (f"{key}.jpg", images[i % len(images)]),
                (f"{key}.txt", caption.encode()),
                (f"{key}.json", json.dumps({"key": key, "caption": caption}).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def build_folder(folder: Path, samples: int, seed: int = 0) -> None:
    """A metadata-only LAIT dataset folder with `samples` accepted and samples/2 rejects."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    images = []
    for i in range(16):
        buffer = io.BytesIO()
        Image.new("RGB", (96, 72), (i * 15, 200 - i * 10, 120)).save(buffer, format="JPEG")
        images.append(buffer.getvalue())
    for shard in range(samples // SHARD_SIZE):
        rows = _rows(rng, shard * SHARD_SIZE, SHARD_SIZE, "accepted")
        table = _table(rows)
        pq.write_table(table, folder / layout.shard_parquet_name(shard), compression="zstd")
        if shard < SHARDS_WITH_TARS:
            _tar(folder / layout.shard_tar_name(shard), rows["key"], rows["caption"], images)

    reasons = list(RejectReason)
    rejects = samples // 2
    (folder / layout.REJECTS_DIR).mkdir()
    for part, start in enumerate(range(0, rejects, 50_000)):
        n = min(50_000, rejects - start)
        rows = _rows(rng, samples + start, n, "rejected")
        chosen = [reasons[i] for i in rng.integers(0, len(reasons), n)]
        rows["reject_reason"] = [r.value for r in chosen]
        rows["reject_stage"] = [r.stage.value for r in chosen]
        rows["reject_detail"] = [f"synthetic {r.value}" for r in chosen]
        rows["error_message"] = [f"{r.value}: synthetic {r.value}" for r in chosen]
        rows["img2dataset_status"] = [
            img2dataset_status_of(Status.REJECTED, r.stage) for r in chosen
        ]
        survivors = rng.integers(0, samples, n)
        rows["duplicate_of"] = [
            f"{s:024x}" if r.value.startswith("duplicate_") else None
            for r, s in zip(chosen, survivors, strict=True)
        ]
        rows["clip_score"] = [
            round(float(c) - 0.1, 4) if r is RejectReason.LOW_CLIP_SCORE else None
            for r, c in zip(chosen, rows["clip_score"], strict=True)
        ]
        table = _table(rows)
        pq.write_table(table, folder / layout.rejects_part_name(part), compression="zstd")
    write_sizes(str(folder))
    run = {"clip_threshold": 0.3, "sources": ["web", "cc-list"], "note": "synthetic bench"}
    write_stats(str(folder), compute_stats(str(folder), run=run))


CHILDREN = {
    "baseline": "import lait.report, matplotlib.figure, PIL.Image, pandas",
    "pandas_peer": (
        "import pandas as pd, glob, sys\n"
        "f = sys.argv[1]\n"
        "meta = pd.concat(pd.read_parquet(p) for p in sorted(glob.glob(f + '/*.parquet')))\n"
        "rej = pd.concat(pd.read_parquet(p) for p in sorted(glob.glob(f + '/rejects/*.parquet')))\n"
        "print(len(meta), len(rej))"
    ),
    "report": (
        "import sys, json\n"
        "from lait.report import write_report\n"
        "paths = write_report(sys.argv[1], sys.argv[2])\n"
        "figures = json.load(open(paths.json))\n"
        "print(figures['accepted'], len(figures['warnings']))"
    ),
}


def run_child(name: str, *args: str) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of a fresh interpreter running CHILDREN[name] (Linux)."""
    started = time.perf_counter()
    # VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec, so a child forked from this
    # (large) process would report the parent's size.
    code = (
        f"{CHILDREN[name]}\n"
        "import re\n"
        "status = open('/proc/self/status').read()\n"
        "print('PEAK', re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1), flush=True)\n"
        # The figure is out; skip the interpreter's teardown. pyarrow's thread pool can abort
        # at exit after a read through a Python file object, which pandas.read_parquet does
        # (apache/arrow#34314, #50482: intermittent SIGABRT; it failed CI's smoke run once).
        "import os\n"
        "os._exit(0)"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {name} child exited with {done.returncode}:\n{done.stderr[-4000:]}")
    seconds = time.perf_counter() - started
    peak_kib = int(done.stdout.rsplit("PEAK", 1)[1])
    return peak_kib / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--keep", help="build the folders here and keep them")
    parser.add_argument("--smoke", action="store_true", help="2,000 samples")
    args = parser.parse_args()
    if args.smoke:
        args.samples = 2000
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    with tempfile.TemporaryDirectory() as scratch:
        base = Path(args.keep or scratch)
        small, large = args.samples // 10, args.samples
        started = time.perf_counter()
        build_folder(base / "small", small)
        build_folder(base / "large", large)
        build_seconds = time.perf_counter() - started

        baseline_mb, _ = run_child("baseline")
        peer_mb, peer_s = run_child("pandas_peer", str(base / "large"))
        small_mb, small_s = run_child("report", str(base / "small"), str(base / "small-report"))
        large_mb, large_s = run_child("report", str(base / "large"), str(base / "large-report"))
        html_bytes = (base / "large-report" / "report.html").stat().st_size

    print(f"built {small:,} + {large:,} sample folders in {build_seconds:.1f} s")
    print(f"{'run':<34}{'peak RSS MiB':>14}{'seconds':>10}")
    print(f"{'baseline (imports only)':<34}{baseline_mb:>14.0f}{'':>10}")
    print(f"{f'pandas read_parquet, {large:,}':<34}{peer_mb:>14.0f}{peer_s:>10.1f}")
    print(f"{f'lait report, {small:,} samples':<34}{small_mb:>14.0f}{small_s:>10.1f}")
    print(f"{f'lait report, {large:,} samples':<34}{large_mb:>14.0f}{large_s:>10.1f}")
    print(
        f"report peak / pandas peak = {large_mb / peer_mb:.2f}; "
        f"report growth from {small:,} to {large:,} samples: {large_mb - small_mb:+.0f} MiB"
    )
    print(
        json.dumps(
            {
                "samples": large,
                "rejects": large // 2,
                "peak_rss_mb": round(large_mb, 1),
                "seconds": round(large_s, 2),
                "peak_rss_mb_at_tenth": round(small_mb, 1),
                "baseline_rss_mb": round(baseline_mb, 1),
                "pandas_peer_rss_mb": round(peer_mb, 1),
                "pandas_peer_seconds": round(peer_s, 2),
                "report_html_bytes": html_bytes,
                "smoke": args.smoke,
            }
        )
    )


if __name__ == "__main__":
    main()
