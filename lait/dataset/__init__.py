"""The LAIT dataset folder: the one contract between the pipeline and everything downstream."""

from lait.dataset.mix import ShardMix, shard_mix
from lait.dataset.reader import DatasetFolder, DatasetFolderError, Sample
from lait.dataset.stats import FolderCounts, StatsMismatchError, check_stats, compute_stats
from lait.dataset.storage import OutputLocationError
from lait.dataset.writer import (
    DatasetWriteError,
    DatasetWriter,
    add_run_info,
    finalize,
    prepare_folder,
    write_rejects_part,
    write_shard,
    write_sizes,
    write_summary,
)

__all__ = [
    "DatasetFolder",
    "DatasetFolderError",
    "DatasetWriteError",
    "DatasetWriter",
    "FolderCounts",
    "OutputLocationError",
    "Sample",
    "ShardMix",
    "StatsMismatchError",
    "add_run_info",
    "check_stats",
    "compute_stats",
    "finalize",
    "prepare_folder",
    "shard_mix",
    "write_rejects_part",
    "write_shard",
    "write_sizes",
    "write_summary",
]
