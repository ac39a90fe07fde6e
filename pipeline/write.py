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
from collections.abc import Iterable
from typing import Any

import apache_beam as beam

from lait.dataset import write_rejects_part, write_shard
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


def write_samples(folder: str, shard_id: int, records: list[Record]) -> int:
    """Commit one shard of accepted records, their staged images read back first."""
    return write_shard(folder, shard_id, with_staged_images(records))


def _num_groups(count: int, per_group: int) -> int:
    return max(1, math.ceil(count / per_group))


class _WriteGroups(beam.PTransform):
    """Group records into `ceil(n / per_group)` hash groups and commit each group."""

    def __init__(self, folder: str, per_group: int, accepted: bool) -> None:
        super().__init__()
        self.folder = folder
        self.per_group = per_group
        self.accepted = accepted

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        count = records | "Count" >> beam.combiners.Count.Globally()
        per_group = self.per_group
        folder = self.folder
        commit = write_samples if self.accepted else write_rejects_part

        def assign(record: Record, total: int) -> tuple[int, Record]:
            return shard_index(record.key, _num_groups(total, per_group)), record

        def write(group: tuple[int, Iterable[Record]]) -> int:
            index, members = group
            return commit(folder, index, list(members))

        return (
            records
            | "Assign" >> beam.Map(assign, total=beam.pvalue.AsSingleton(count))
            | "Group" >> beam.GroupByKey()
            | "Commit" >> beam.Map(write)
        )


class _BySettlement(beam.PartitionFn):
    """Accepted → 0, rejected → 1; an unsettled record here is a bug in the graph."""

    def partition_for(self, element: Any, num_partitions: int, *args: Any, **kwargs: Any) -> int:
        record: Record = element
        if record.status is Status.ACCEPTED:
            return 0
        if record.status is Status.REJECTED:
            return 1
        raise ValueError(f"record {record.key} reached the writer unsettled ({record.status})")


class WriteDataset(beam.PTransform):
    """Commit settled records as shards (accepted) and rejects-ledger parts (rejected).

    Returns the PCollection of per-file row counts. Call `lait.dataset.finalize` after the
    pipeline finishes to write sizes.json and stats.json.
    """

    def __init__(self, folder: str, samples_per_shard: int, rejects_per_part: int) -> None:
        super().__init__()
        self.folder = folder
        self.samples_per_shard = samples_per_shard
        self.rejects_per_part = rejects_per_part

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        accepted, rejected = records | "Split" >> beam.Partition(_BySettlement(), 2)
        shards = accepted | "Shards" >> _WriteGroups(self.folder, self.samples_per_shard, True)
        parts = rejected | "Rejects" >> _WriteGroups(self.folder, self.rejects_per_part, False)
        return (shards, parts) | "Written" >> beam.Flatten()
