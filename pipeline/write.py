"""Write settled records into a LAIT dataset folder from a Beam pipeline.

Accepted records are spread over `ceil(n / samples_per_shard)` shards by a hash of their
key (n counted in the pipeline), grouped with a GroupByKey (metadata only: the images wait in
staging files), and each group is committed as one whole shard by `lait.dataset.write_shard`
once its images are read back from staging. The same keys give the same shards, so a
rerun rewrites identical files. Rejects are written the same way as ledger parts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Iterable
from typing import Any

import apache_beam as beam

from lait.dataset import FolderCounts, write_rejects_part, write_shard, write_summary
from lait.record import Record, Status
from pipeline.staging import read_staged_many


def shard_index(key: str, num_shards: int) -> int:
    """The shard a key belongs in (stable across runs, processes and Python versions)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_shards


def with_staged_images(records: list[Record]) -> list[Record]:
    """`records` with the bytes of every staged image read back (each staging file opened
    once): the one place pixels rejoin their metadata."""
    staged = [i for i, r in enumerate(records) if r.image is None and r.image_ref is not None]
    if not staged:
        return records
    images = read_staged_many([records[i].image_ref or "" for i in staged])
    out = list(records)
    for index, image in zip(staged, images, strict=True):
        out[index] = dataclasses.replace(records[index], image=image, image_ref=None)
    return out


def write_samples(folder: str, shard_id: int, records: list[Record]) -> FolderCounts:
    """Commit one shard of accepted records, their staged images read back first; its counts."""
    write_shard(folder, shard_id, with_staged_images(records))
    return FolderCounts.of_records("accepted", records, shard_id)


def write_rejects(folder: str, part_id: int | str, records: list[Record]) -> FolderCounts:
    """Commit one part of the rejects ledger; its counts."""
    write_rejects_part(folder, part_id, records)
    return FolderCounts.of_records("rejected", records)


class _MergeCounts(beam.CombineFn):
    """Per-file counts → the job's counts (a few numbers per file: cheap to combine)."""

    def create_accumulator(self) -> FolderCounts:
        return FolderCounts()

    def add_input(self, total: FolderCounts, counts: FolderCounts) -> FolderCounts:
        return total.merge(counts)

    def merge_accumulators(self, accumulators: Iterable[FolderCounts]) -> FolderCounts:
        total = FolderCounts()
        for counts in accumulators:
            total.merge(counts)
        return total

    def extract_output(self, total: FolderCounts) -> FolderCounts:
        return total


def _num_groups(count: int, per_group: int) -> int:
    return max(1, math.ceil(count / per_group))


class WriteGroups(beam.PTransform):
    """Group elements into `ceil(n / per_group)` hash groups and commit each group.

    `commit(folder, group_id, members)` writes one group (accepted samples as a shard,
    rejects as a ledger part by default); `key_of` gives the stable key an element is hashed
    by (a record's key by default), so a rerun puts every element in the same group."""

    def __init__(
        self,
        folder: str,
        per_group: int,
        accepted: bool = False,
        commit: Callable[[str, int, list[Any]], Any] | None = None,
        key_of: Callable[[Any], str] | None = None,
    ) -> None:
        super().__init__()
        self.folder = folder
        self.per_group = per_group
        self.commit = commit or (write_samples if accepted else write_rejects)
        self.key_of = key_of or (lambda record: record.key)

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        count = records | "Count" >> beam.combiners.Count.Globally()
        per_group = self.per_group
        folder = self.folder
        commit = self.commit
        key_of = self.key_of

        def assign(element: Any, total: int) -> tuple[int, Any]:
            return shard_index(key_of(element), _num_groups(total, per_group)), element

        def write(group: tuple[int, Iterable[Any]]) -> Any:
            index, members = group
            return commit(folder, index, list(members))

        return (
            records
            | "Assign" >> beam.Map(assign, total=beam.pvalue.AsSingleton(count))
            | "Group" >> beam.GroupByKey()
            | "Commit" >> beam.Map(write)
        )


def _write_summary(counts: FolderCounts, folder: str) -> FolderCounts:
    write_summary(folder, counts)
    return counts


class _BySettlement(beam.PartitionFn):
    """Accepted → 0, rejected → 1; an unsettled record here is a bug in the graph."""

    def partition_for(self, element: Any, num_partitions: int, *args: Any, **kwargs: Any) -> int:
        record: Record = element
        if record.status is Status.ACCEPTED:
            return 0
        if record.status is Status.REJECTED:
            return 1
        raise ValueError(f"record {record.key} reached the writer unsettled ({record.status})")


class MergeCounts(beam.PTransform):
    """Per-file counts → sizes.json, stats.json and the card, written once; returns the
    merged counts."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def expand(self, counts: beam.PCollection) -> beam.PCollection:
        return (
            counts
            | "MergeCounts" >> beam.CombineGlobally(_MergeCounts())
            | "WriteSummary" >> beam.Map(_write_summary, self.folder)
        )


class _NumberedFrom:
    """Commit a shard group as shard `first + group id` (shards added to a written folder)."""

    def __init__(self, first: int) -> None:
        self.first = first

    def __call__(self, folder: str, index: int, records: list[Record]) -> FolderCounts:
        return write_samples(folder, self.first + index, records)


class _PartNamed:
    """Commit a ledger group as part `PREFIX00000` (parts added to a written folder)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, folder: str, index: int, records: list[Record]) -> FolderCounts:
        return write_rejects(folder, f"{self.prefix}{index:05d}", records)


class WriteDataset(beam.PTransform):
    """Commit settled records as shards (accepted) and rejects-ledger parts (rejected).

    The per-file counts are merged inside the job and sizes.json, stats.json and the card
    are written once from them (`lait.dataset.write_summary`), so nothing lists or reopens
    the committed files; the launcher adds its run information afterwards
    (`lait.dataset.add_run_info`). Returns the PCollection holding the merged counts.

    Adding to a written folder (`pipeline.retry`): new shards are numbered from
    `first_shard`, new ledger parts are named `PART_PREFIX00000`..., and `kept_counts` (a
    PCollection of the counts of the files already there and kept) merge into the stats.
    """

    def __init__(
        self,
        folder: str,
        samples_per_shard: int,
        rejects_per_part: int,
        *,
        first_shard: int = 0,
        part_prefix: str = "",
        kept_counts: beam.PCollection | None = None,
    ) -> None:
        super().__init__()
        self.folder = folder
        self.samples_per_shard = samples_per_shard
        self.rejects_per_part = rejects_per_part
        self.first_shard = first_shard
        self.part_prefix = part_prefix
        self.kept_counts = kept_counts

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        accepted, rejected = records | "Split" >> beam.Partition(_BySettlement(), 2)
        shard_commit = _NumberedFrom(self.first_shard) if self.first_shard else None
        part_commit = _PartNamed(self.part_prefix) if self.part_prefix else None
        shards = accepted | "Shards" >> WriteGroups(
            self.folder, self.samples_per_shard, True, commit=shard_commit
        )
        parts = rejected | "Rejects" >> WriteGroups(
            self.folder, self.rejects_per_part, False, commit=part_commit
        )
        written = [shards, parts]
        if self.kept_counts is not None:
            written.append(self.kept_counts)
        return written | "Written" >> beam.Flatten() | "Summary" >> MergeCounts(self.folder)
