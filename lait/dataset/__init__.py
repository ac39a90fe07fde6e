"""The LAIT dataset folder: the one contract between the pipeline and everything downstream."""

from lait.dataset.mix import ShardMix, shard_mix
from lait.dataset.reader import DatasetFolder, DatasetFolderError, Sample
from lait.dataset.stats import StatsMismatchError, check_stats, compute_stats
from lait.dataset.storage import OutputLocationError
from lait.dataset.writer import (
    DatasetWriteError,
    DatasetWriter,
    finalize,
    prepare_folder,
    write_rejects_part,
    write_shard,
    write_sizes,
)

__all__ = [
    "DatasetFolder",
    "DatasetFolderError",
    "DatasetWriteError",
    "DatasetWriter",
    "OutputLocationError",
    "Sample",
    "ShardMix",
    "StatsMismatchError",
    "check_stats",
    "compute_stats",
    "finalize",
    "prepare_folder",
    "shard_mix",
    "write_rejects_part",
    "write_shard",
    "write_sizes",
]
