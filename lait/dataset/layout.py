"""The names of things in a LAIT dataset folder.

DATASET/
  00000.tar 00000.parquet 00001.tar 00001.parquet ...   accepted samples (WebDataset)
  00000_stats.json 00001_stats.json ...                  per-shard counts (img2dataset's)
  rejects/00000.parquet ...                              every dropped candidate
  pages/00000.parquet ...                                every page a crawl tried (pipeline.pages)
  stats.json                                             per-stage counts that add up
  sizes.json                                             samples per shard (open_clip)
  README.md                                              dataset card (Hugging Face datasets)
  _staging/                   while a job runs: fetched images waiting for the writer
"""

from __future__ import annotations

import re

SHARD_DIGITS = 5
REJECTS_DIR = "rejects"
PAGES_DIR = "pages"  # the crawl's pages ledger: one row per page fetched, refused or failed
STAGING_DIR = "_staging"  # a running job's fetched images (pipeline.staging); removed at the end
STATS_FILE = "stats.json"
SIZES_FILE = "sizes.json"
CARD_FILE = "README.md"
SHARD_PATTERN = re.compile(r"^(\d{5,})\.tar$")
_DATASET_FILE = re.compile(
    r"^(\d{5,}\.(tar|parquet)|\d{5,}_stats\.json|stats\.json|sizes\.json|README\.md)$"
)


def is_dataset_file(name: str) -> bool:
    """Whether a top-level file name is one the dataset writer owns (and may replace)."""
    return bool(_DATASET_FILE.match(name))


def shard_tar_name(shard_id: int) -> str:
    """`00042.tar`."""
    return f"{shard_id:0{SHARD_DIGITS}d}.tar"


def shard_parquet_name(shard_id: int) -> str:
    """`00042.parquet`, the metadata of the samples in `00042.tar`."""
    return f"{shard_id:0{SHARD_DIGITS}d}.parquet"


def shard_stats_name(shard_id: int) -> str:
    """`00042_stats.json`, img2dataset's per-shard counts for `00042.tar`."""
    return f"{shard_id:0{SHARD_DIGITS}d}_stats.json"


def rejects_part_name(part_id: int | str) -> str:
    """`rejects/00042.parquet` (a part may also be named by a string, e.g. a worker's id)."""
    stem = f"{part_id:0{SHARD_DIGITS}d}" if isinstance(part_id, int) else part_id
    return f"{REJECTS_DIR}/{stem}.parquet"


def pages_part_name(part_id: int) -> str:
    """`pages/00042.parquet`, one part of the crawl's pages ledger."""
    return f"{PAGES_DIR}/{part_id:0{SHARD_DIGITS}d}.parquet"


def shard_id_of(name: str) -> int | None:
    """The shard number of a committed shard file name, or None if it is not one."""
    match = SHARD_PATTERN.match(name.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


def parquet_shard_id(name: str) -> int | None:
    """The shard number of a shard's metadata file name (`00042.parquet`), or None."""
    base = name.rsplit("/", 1)[-1]
    return (
        shard_id_of(base.removesuffix(".parquet") + ".tar") if base.endswith(".parquet") else None
    )


def brace_pattern(folder: str, shard_ids: list[int]) -> str:
    """The `{00000..00041}.tar` pattern that webdataset and open_clip take as `--train-data`."""
    if not shard_ids:
        raise ValueError(f"no shards in {folder}")
    base = folder.rstrip("/")
    ids = sorted(shard_ids)
    if len(ids) == 1:
        return f"{base}/{shard_tar_name(ids[0])}"
    if ids != list(range(ids[0], ids[-1] + 1)):
        # Gaps: webdataset also takes a "::"-separated list of URLs.
        return "::".join(f"{base}/{shard_tar_name(i)}" for i in ids)
    return f"{base}/{{{ids[0]:0{SHARD_DIGITS}d}..{ids[-1]:0{SHARD_DIGITS}d}}}.tar"
