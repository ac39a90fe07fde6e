"""Read a LAIT dataset folder: samples from the shards, metadata and rejects as tables.

Only committed files are read (temporary names from an unfinished write are ignored).
Tables are read one parquet file at a time where possible, so memory stays bounded.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from lait.dataset import layout, storage
from lait.dataset.schema import METADATA_SCHEMA
from lait.record import Record


class DatasetFolderError(ValueError):
    """A path is not a readable LAIT dataset folder."""


@dataclass(frozen=True)
class Sample:
    """One accepted sample as stored in a shard."""

    key: str
    image: bytes
    image_format: str
    caption: str
    metadata: dict[str, Any]

    def record(self) -> Record:
        """The full record this sample was written from."""
        return Record.from_metadata(self.metadata, image=self.image)


class DatasetFolder:
    """A LAIT dataset folder (local path or fsspec URL)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fs, self._root = storage.filesystem(self.path)
        if not self._fs.isdir(self._root):
            raise DatasetFolderError(
                f"{self.path} is not a folder; pass the output folder of a LAIT job"
            )

    def _names(self) -> list[str]:
        return sorted(p.rsplit("/", 1)[-1] for p in self._fs.ls(self._root, detail=False))

    def shard_ids(self) -> list[int]:
        """Numbers of the committed shards, ascending."""
        ids = (layout.shard_id_of(name) for name in self._names())
        return [i for i in ids if i is not None]

    def shard_paths(self) -> list[str]:
        """Paths of the committed shard tars, ascending."""
        return [storage.join(self.path, layout.shard_tar_name(i)) for i in self.shard_ids()]

    def webdataset_urls(self) -> str:
        """The shards as one URL pattern for `webdataset.WebDataset` or open_clip's trainer."""
        return layout.brace_pattern(self.path, self.shard_ids())

    def iter_samples(self) -> Iterator[Sample]:
        """Every accepted sample, shard by shard, in key order within a shard."""
        for shard in self.shard_paths():
            yield from self._iter_shard(shard)

    def _iter_shard(self, shard: str) -> Iterator[Sample]:
        with self._fs.open(shard, "rb") as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
            members: dict[str, dict[str, bytes]] = {}
            order: list[str] = []
            for member in tar:
                if not member.isfile():
                    continue
                key, _, extension = member.name.partition(".")
                extracted = tar.extractfile(member)
                if extracted is None:
                    continue
                if key not in members:
                    # webdataset layout: a sample's members are consecutive, so the previous
                    # sample is complete once a new key starts.
                    if order:
                        yield self._sample(shard, order[-1], members.pop(order[-1]))
                    members[key] = {}
                    order.append(key)
                members[key][extension] = extracted.read()
            if order and order[-1] in members:
                yield self._sample(shard, order[-1], members.pop(order[-1]))

    @staticmethod
    def _sample(shard: str, key: str, files: dict[str, bytes]) -> Sample:
        image_ext = next((e for e in ("jpg", "png", "webp") if e in files), None)
        if image_ext is None or "json" not in files or "txt" not in files:
            raise DatasetFolderError(
                f"sample {key} in {shard} is incomplete (has {sorted(files)}); the shard is damaged"
            )
        return Sample(
            key=key,
            image=files[image_ext],
            image_format=image_ext,
            caption=files["txt"].decode("utf-8"),
            metadata=json.loads(files["json"]),
        )

    def iter_metadata_batches(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Accepted samples' metadata, one table per shard."""
        for shard_id in self.shard_ids():
            path = storage.join(self._root, layout.shard_parquet_name(shard_id))
            if self._fs.exists(path):
                yield storage.read_parquet(self._fs, path, columns)

    def iter_rejects_batches(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """The rejects ledger, one table per part."""
        folder = storage.join(self._root, layout.REJECTS_DIR)
        if not self._fs.exists(folder):
            return
        for path in sorted(self._fs.ls(folder, detail=False)):
            if path.endswith(".parquet") and not storage.is_temporary(path):
                yield storage.read_parquet(self._fs, path, columns)

    def metadata(self, columns: list[str] | None = None) -> pa.Table:
        """All accepted samples' metadata in one table."""
        return _concat(list(self.iter_metadata_batches(columns)), columns)

    def rejects(self, columns: list[str] | None = None) -> pa.Table:
        """The whole rejects ledger in one table."""
        return _concat(list(self.iter_rejects_batches(columns)), columns)

    def _read_json(self, name: str) -> Any:
        path = storage.join(self._root, name)
        if not self._fs.exists(path):
            raise DatasetFolderError(
                f"{self.path} has no {name}: the job that wrote it did not finish; rerun it"
            )
        with self._fs.open(path, "rb") as handle:
            return json.loads(handle.read())

    def stats(self) -> dict[str, Any]:
        """stats.json as written when the job finished."""
        stats: dict[str, Any] = self._read_json(layout.STATS_FILE)
        return stats

    def sizes(self) -> dict[str, int]:
        """sizes.json: samples per shard file name."""
        sizes: dict[str, int] = self._read_json(layout.SIZES_FILE)
        return sizes

    def __len__(self) -> int:
        return sum(self.sizes().values())


def _concat(tables: list[pa.Table], columns: list[str] | None) -> pa.Table:
    if tables:
        return pa.concat_tables(tables)
    schema = (
        METADATA_SCHEMA
        if columns is None
        else pa.schema([METADATA_SCHEMA.field(c) for c in columns])
    )
    return schema.empty_table()
