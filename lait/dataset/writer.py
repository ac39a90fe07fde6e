"""Write a LAIT dataset folder: shards, their parquet metadata, the rejects ledger, stats.

Two ways in, one format out:
- `write_shard` / `write_rejects_part` commit one whole file set at a time; a Beam job calls
  them once per shard group, so a rerun overwrites the same names with the same bytes.
- `DatasetWriter` streams records in one process (local jobs, tools, tests), rolling a new
  shard every `samples_per_shard` accepted samples.
Every commit is atomic (see `storage.atomic_output`): a killed writer never leaves a partial
shard that a reader would take for whole.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Collection, Iterable, Sequence
from types import TracebackType
from typing import Any

import pyarrow.parquet as pq

from lait.dataset import layout, storage
from lait.dataset.card import write_card
from lait.dataset.schema import metadata_table
from lait.dataset.stats import FolderCounts, compute_stats, shard_stats, write_stats
from lait.record import Record, Status

IMAGE_EXTENSIONS = {"jpg", "png", "webp"}
_FIXED_MTIME = 0  # constant member times keep shard bytes identical across reruns


class DatasetWriteError(ValueError):
    """A record cannot be written as asked (missing image, bad key, duplicate key)."""


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = _FIXED_MTIME
    info.mode = 0o644
    return info, io.BytesIO(data)


def _check_sample(record: Record) -> None:
    if record.status is not Status.ACCEPTED:
        raise DatasetWriteError(
            f"only accepted records go in shards; {record.key} is {record.status}"
        )
    if record.image is None or record.image_format not in IMAGE_EXTENSIONS:
        raise DatasetWriteError(
            f"record {record.key} needs image bytes and a format in {sorted(IMAGE_EXTENSIONS)}, "
            f"got format {record.image_format!r}"
        )
    if not record.key or "." in record.key or "/" in record.key:
        raise DatasetWriteError(f"record key {record.key!r} must be non-empty with no '.' or '/'")


def write_shard(folder: str, shard_id: int, records: Sequence[Record]) -> int:
    """Commit shard `shard_id` (tar, stats, parquet) holding `records`, in key order; return
    its size.

    The tar holds KEY.<jpg|png|webp>, KEY.txt (the caption) and KEY.json (all metadata) per
    sample; NNNNN_stats.json holds img2dataset's per-shard counts. The tar and the stats are
    committed before the parquet, which is the shard's commit mark (sizes.json and stats.json
    count parquet files): a parquet never describes a missing tar or lacks its stats.
    """
    start_time = time.time()
    ordered = sorted(records, key=lambda r: r.key)
    seen: set[str] = set()
    for record in ordered:
        _check_sample(record)
        if record.key in seen:
            raise DatasetWriteError(f"duplicate key {record.key} in shard {shard_id}")
        seen.add(record.key)

    fs, root = storage.filesystem(folder)
    tar_path = storage.join(root, layout.shard_tar_name(shard_id))
    with (
        storage.atomic_output(fs, tar_path) as out,
        tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for record in ordered:
            assert record.image is not None  # checked above
            metadata = json.dumps(record.metadata(), ensure_ascii=False, sort_keys=True)
            for name, data in (
                (f"{record.key}.{record.image_format}", record.image),
                (f"{record.key}.txt", record.caption.encode("utf-8")),
                (f"{record.key}.json", metadata.encode("utf-8")),
            ):
                tar.addfile(*_member(name, data))
    stats = shard_stats(ordered, start_time, time.time())
    with storage.atomic_output(fs, storage.join(root, layout.shard_stats_name(shard_id))) as out:
        out.write(json.dumps(stats, indent=4).encode("utf-8"))
    _write_parquet(fs, storage.join(root, layout.shard_parquet_name(shard_id)), ordered)
    return len(ordered)


def write_rejects_part(folder: str, part_id: int | str, records: Sequence[Record]) -> int:
    """Commit one part of the rejects ledger (`rejects/PART.parquet`); return its row count.

    Rows are in (key, sighting id) order: a key may repeat in the ledger, its sightings not,
    so the part's bytes do not depend on the order the records arrived in.
    """
    ordered = sorted(records, key=lambda r: (r.key, r.sighting_id or ""))
    for record in ordered:
        if record.status is not Status.REJECTED or record.reject_reason is None:
            raise DatasetWriteError(f"record {record.key} is not rejected with a reason")
    fs, root = storage.filesystem(folder)
    _write_parquet(fs, storage.join(root, layout.rejects_part_name(part_id)), ordered)
    return len(ordered)


def _write_parquet(fs: Any, path: str, records: Sequence[Record]) -> None:
    with storage.atomic_output(fs, path) as out:
        pq.write_table(metadata_table(records), out, compression="zstd")


def write_sizes(folder: str, sizes: dict[str, int] | None = None) -> dict[str, int]:
    """Write `sizes.json` ({shard file name: samples}): the given sizes, or counted from the
    committed parquet files."""
    fs, root = storage.filesystem(folder)
    if sizes is None:
        sizes = {}
        for path in sorted(fs.ls(root, detail=False)):
            shard_id = layout.parquet_shard_id(path)
            if shard_id is None:
                continue
            with storage.open_parquet(fs, path) as parquet:
                sizes[layout.shard_tar_name(shard_id)] = parquet.metadata.num_rows
    with storage.atomic_output(fs, storage.join(root, layout.SIZES_FILE)) as out:
        out.write(json.dumps(sizes, indent=1, sort_keys=True).encode())
    return sizes


def finalize(folder: str, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write sizes.json, stats.json and README.md (the dataset card) from what is committed
    in `folder`; return the stats."""
    write_sizes(folder)
    stats = compute_stats(folder, run=run)
    write_stats(folder, stats)
    write_card(folder, stats)
    return stats


def write_summary(
    folder: str, counts: FolderCounts, run: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write sizes.json, stats.json and the card from counts a job merged as it committed its
    files (no file is listed or reopened); return the stats."""
    write_sizes(folder, dict(sorted(counts.sizes.items())))
    stats = counts.stats(folder, run)
    write_stats(folder, stats)
    write_card(folder, stats)
    return stats


def add_run_info(folder: str, run: dict[str, Any]) -> dict[str, Any]:
    """Add what only the launcher knows (the job's duration, its counters) to the stats.json a
    job wrote, and rewrite it and the card: one file read, whatever the number of shards."""
    fs, root = storage.filesystem(folder)
    stats: dict[str, Any] = json.loads(fs.cat_file(storage.join(root, layout.STATS_FILE)))
    stats["run"] = {**stats.get("run", {}), **run}
    write_stats(folder, stats)
    write_card(folder, stats)
    return stats


def prepare_folder(folder: str, *, overwrite: bool, keep: Collection[str] = ()) -> None:
    """Make `folder` ready for a new dataset.

    A folder that already holds files is refused unless `overwrite`, which removes the
    dataset files in it (shards, parquet, per-shard stats, rejects, stats, uncommitted
    leftovers) and only those, so a rerun never mixes with an older run's shards.

    Raises `storage.OutputLocationError` first when `folder` is on a store that cannot be
    written (no such bucket, no credentials, no permission): jobs call this before any work.
    Names in `keep` (a resumed job's `_staging`) are left in place.
    """
    storage.check_output_location(folder)
    fs, root = storage.filesystem(folder)
    if fs.exists(root) and fs.ls(root, detail=False):
        if not overwrite:
            raise FileExistsError(
                f"{folder} is not empty; choose a new output folder or overwrite it "
                "(--overwrite on the command line)"
            )
        for path in fs.ls(root, detail=False):
            name = path.rsplit("/", 1)[-1]
            if name in keep:
                continue
            if name in (layout.REJECTS_DIR, layout.PAGES_DIR, layout.STAGING_DIR):
                fs.rm(path, recursive=True)
            elif layout.is_dataset_file(name) or storage.is_temporary(name):
                fs.rm(path)
    if not storage.is_object_store(fs):  # there, makedirs would create a missing bucket
        fs.makedirs(root, exist_ok=True)


class DatasetWriter:
    """Stream records into a dataset folder from one process.

    Accepted records fill shards of `samples_per_shard`; rejected ones fill rejects parts.
    `close()` commits what is buffered and writes sizes.json and stats.json. Use it as a
    context manager; if the body raises, buffered records are not committed and stats are
    not written (what was committed before stays whole).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        samples_per_shard: int = 1000,
        rejects_per_part: int = 50_000,
        run: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        if samples_per_shard < 1 or rejects_per_part < 1:
            raise ValueError("samples_per_shard and rejects_per_part must be >= 1")
        self.folder = os.fspath(folder)
        self.samples_per_shard = samples_per_shard
        self.rejects_per_part = rejects_per_part
        self.run = run
        self._accepted: list[Record] = []
        self._rejected: list[Record] = []
        self._next_shard = 0
        self._next_rejects_part = 0
        self._accepted_keys: set[str] = set()
        self.stats: dict[str, Any] | None = None
        prepare_folder(self.folder, overwrite=overwrite)

    def write(self, record: Record) -> None:
        """Add one settled record (accepted or rejected).

        Accepted keys must be unique; the ledger may repeat a key (a duplicate candidate
        rejected in favour of an accepted one with the same url and caption).
        """
        if record.status is Status.ACCEPTED:
            _check_sample(record)
            if record.key in self._accepted_keys:
                raise DatasetWriteError(f"key {record.key} accepted twice ({record.url!r})")
            self._accepted_keys.add(record.key)
            self._accepted.append(record)
            if len(self._accepted) >= self.samples_per_shard:
                self._flush_shard()
        elif record.status is Status.REJECTED:
            self._rejected.append(record)
            if len(self._rejected) >= self.rejects_per_part:
                self._flush_rejects()
        else:
            raise DatasetWriteError(f"record {record.key} is not settled (status {record.status})")

    def write_all(self, records: Iterable[Record]) -> None:
        """Add many settled records."""
        for record in records:
            self.write(record)

    def _flush_shard(self) -> None:
        if self._accepted:
            write_shard(self.folder, self._next_shard, self._accepted)
            self._next_shard += 1
            self._accepted = []

    def _flush_rejects(self) -> None:
        if self._rejected:
            write_rejects_part(self.folder, self._next_rejects_part, self._rejected)
            self._next_rejects_part += 1
            self._rejected = []

    def close(self) -> dict[str, Any]:
        """Commit what is buffered, write sizes.json and stats.json; return the stats."""
        self._flush_shard()
        self._flush_rejects()
        self.stats = finalize(self.folder, run=self.run)
        return self.stats

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
