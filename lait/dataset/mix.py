"""Train on several dataset folders at once: the `--train-data` and sample count of a mix.

open_clip's trainer (and webdataset) take several folders as one "::"-joined URL list, but
open_clip counts the samples from the first folder's sizes.json only, looking every shard up
by its file name. Each LAIT folder numbers its shards from 00000.tar, so B's 00000.tar is
counted as A's: the total is silently wrong (or a KeyError when B has more shards than A).
Shard names stay per folder (a folder is a self-contained, resumable unit, and renaming
would break every folder already written); the mix's total is counted here instead, from
each folder's own sizes.json, and passed as `--train-num-samples`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from lait.dataset import layout
from lait.dataset.reader import DatasetFolder, DatasetFolderError


@dataclass(frozen=True)
class ShardMix:
    """Several folders' shards as one webdataset URL list, with the samples they hold."""

    train_data: str  # "A/{00000..00004}.tar::B/{00000..00002}.tar"
    num_samples: int
    samples_per_folder: dict[str, int]

    def open_clip_args(self) -> list[str]:
        """The `--train-data` and `--train-num-samples` arguments of open_clip's trainer."""
        return ["--train-data", self.train_data, "--train-num-samples", str(self.num_samples)]


def shard_mix(folders: Sequence[str | os.PathLike[str]]) -> ShardMix:
    """The mix of `folders`' shards, counted from each folder's sizes.json."""
    if not folders:
        raise ValueError("shard_mix needs at least one dataset folder")
    patterns: list[str] = []
    samples: dict[str, int] = {}
    for path in folders:
        folder = DatasetFolder(path)
        sizes = folder.sizes()
        shard_ids = folder.shard_ids()
        missing = [
            layout.shard_tar_name(i) for i in shard_ids if layout.shard_tar_name(i) not in sizes
        ]
        if missing:
            raise DatasetFolderError(
                f"{folder.path}/sizes.json does not list {missing}; rerun the job that wrote it"
            )
        if folder.path in samples:
            raise ValueError(f"{folder.path} is given twice; its samples would be counted twice")
        patterns.append(folder.webdataset_urls())
        samples[folder.path] = sum(sizes[layout.shard_tar_name(i)] for i in shard_ids)
    return ShardMix("::".join(patterns), sum(samples.values()), samples)
