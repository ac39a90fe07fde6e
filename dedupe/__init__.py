"""Deduplication and evaluation-set decontamination, as pure functions and Beam transforms.

    records | Deduplicate(DedupeConfig())          # inside a pipeline

A job of its own over existing dataset folders is `pipeline.dedupe_job.dedupe_dataset` (job
graphs live in pipeline/, which imports dedupe/; dedupe/ imports only lait/).

Every decision is a shuffle (GroupByKey / CoGroupByKey / Combine); nothing is decided from a
set held by one process.
"""

from dedupe.config import DedupeConfig
from dedupe.decontaminate import EvalImage, EvalImagesError, load_eval_images
from dedupe.transform import Decontaminate, Deduplicate

__all__ = [
    "Decontaminate",
    "DedupeConfig",
    "Deduplicate",
    "EvalImage",
    "EvalImagesError",
    "load_eval_images",
]
