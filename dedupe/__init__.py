"""Deduplication and evaluation-set decontamination, as pure functions and Beam transforms.

    records | Deduplicate(DedupeConfig())          # inside a pipeline
    dedupe_dataset([folder_a, folder_b], out, DedupeConfig(), beam_args)   # a job of its own

Every decision is a shuffle (GroupByKey / CoGroupByKey / Combine); nothing is decided from a
set held by one process.
"""

from dedupe.config import DedupeConfig
from dedupe.decontaminate import EvalImage, EvalImagesError, load_eval_images
from dedupe.job import dedupe_dataset
from dedupe.transform import Decontaminate, Deduplicate

__all__ = [
    "Decontaminate",
    "DedupeConfig",
    "Deduplicate",
    "EvalImage",
    "EvalImagesError",
    "dedupe_dataset",
    "load_eval_images",
]
