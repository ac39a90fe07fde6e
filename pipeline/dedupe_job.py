"""`dedupe_dataset`: dedupe one or more existing dataset folders into a new one.

Shards are read on the workers (one element per shard tar), survivors keep their image bytes
and are written as new shards; the new rejects ledger holds every input's rejects plus the
new duplicate rejects, so accepted + rejected of the output = the inputs' candidates.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions

from dedupe.config import DedupeConfig
from dedupe.embeddings import EmbeddingModel, ImageEmbeddings
from dedupe.transform import Deduplicate
from lait.dataset import (
    DatasetFolder,
    StatsMismatchError,
    finalize,
    layout,
    prepare_folder,
    storage,
)
from lait.record import Record, Status
from pipeline.beam_options import local_runner, pipeline_options
from pipeline.write import WriteDataset

_IMAGE_EXTENSIONS = ("jpg", "png", "webp")


def read_shard_records(path: str) -> Iterator[Record]:
    """The samples of one shard tar, as live candidate records carrying their image bytes."""
    fs, root = storage.filesystem(path)
    with fs.open(root, "rb") as handle:
        data = handle.read()
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        for member in tar:
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None:
                key, _, extension = member.name.partition(".")
                samples.setdefault(key, {})[extension] = extracted.read()
    for key, files in sorted(samples.items()):
        image_ext = next((e for e in _IMAGE_EXTENSIONS if e in files), None)
        if image_ext is None or "json" not in files:
            raise ValueError(
                f"sample {key} in {path} is incomplete ({sorted(files)}); the shard is damaged"
            )
        record = Record.from_metadata(json.loads(files["json"]), image=files[image_ext])
        yield dataclasses.replace(
            record, status=Status.CANDIDATE, image_format=record.image_format or image_ext
        )


def read_rejects_part(path: str) -> Iterator[Record]:
    """The rows of one rejects-ledger part, as rejected records."""
    fs, root = storage.filesystem(path)
    table = storage.read_parquet(fs, root)
    for row in table.to_pylist():
        yield Record.from_metadata(row)


def _rejects_parts(folder: str) -> list[str]:
    fs, root = storage.filesystem(folder)
    rejects = storage.join(root, layout.REJECTS_DIR)
    if not fs.exists(rejects):
        return []
    return [
        storage.join(folder, layout.REJECTS_DIR, p.rsplit("/", 1)[-1])
        for p in sorted(fs.ls(rejects, detail=False))
        if p.endswith(".parquet") and not storage.is_temporary(p)
    ]


class ReadDatasets(beam.PTransform):
    """Every record of the given dataset folders: accepted ones live again, rejects as they are."""

    def __init__(self, folders: list[str]) -> None:
        super().__init__()
        self.shards = [p for f in folders for p in DatasetFolder(f).shard_paths()]
        self.rejects = [p for f in folders for p in _rejects_parts(f)]

    def expand(self, pipeline: Any) -> beam.PCollection:
        shards = (
            pipeline
            | "ShardPaths" >> beam.Create(self.shards)
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadShard" >> beam.FlatMap(read_shard_records)
        )
        rejects = (
            pipeline
            | "RejectsPaths" >> beam.Create(self.rejects)
            | "SpreadRejects" >> beam.Reshuffle()
            | "ReadRejects" >> beam.FlatMap(read_rejects_part)
        )
        return (shards, rejects) | "AllRecords" >> beam.Flatten()


def dedupe_dataset(
    source_folders: list[str],
    out_folder: str,
    config: DedupeConfig,
    beam_args: list[str],
    *,
    samples_per_shard: int = 1000,
    rejects_per_part: int = 50_000,
    overwrite: bool = False,
    embedding_model: EmbeddingModel | None = None,
) -> dict[str, Any]:
    """Dedupe `source_folders` together into `out_folder`; return its stats (also stats.json).

    With `config.semantic`, `embedding_model` names the CLIP that embeds the shards' images
    (on the workers, once per process) for the semantic stage.

    Raises `StatsMismatchError` if the output's candidates differ from the inputs' (a lost
    or doubled record), `lait.dataset.DatasetFolderError` for an unreadable input.
    """
    if not source_folders:
        raise ValueError("give at least one dataset folder to dedupe")
    if config.semantic and embedding_model is None:
        raise ValueError(
            "semantic dedupe embeds the images with CLIP: name the model (lait dedupe "
            "--clip-model NAME [--clip-pretrained TAG_OR_PATH]; lait-demo-clip for the demo web)"
        )
    # A list, not a dict: the same folder given twice is read (and counted) twice.
    inputs = [
        {"folder": folder, "candidates": DatasetFolder(folder).stats()["candidates"]}
        for folder in source_folders
    ]
    read = sum(entry["candidates"] for entry in inputs)
    options, local = pipeline_options(list(beam_args))
    prepare_folder(out_folder, overwrite=overwrite)
    started = time.time()
    pipeline = beam.Pipeline(runner=local_runner() if local else None, options=options)
    records = pipeline | "Read" >> ReadDatasets(list(source_folders))
    embeddings = (
        records | "Embed" >> ImageEmbeddings(embedding_model)
        if config.semantic and embedding_model is not None
        else None
    )
    _ = (
        records
        | "Dedupe" >> Deduplicate(config, embeddings=embeddings)
        | "Settle" >> beam.Map(Record.accepted_if_live)
        | "Write" >> WriteDataset(out_folder, samples_per_shard, rejects_per_part)
    )
    pipeline.run().wait_until_finish()
    run = {
        "job": "dedupe",
        "runner": "FnApiRunner (local)" if local else options.view_as(StandardOptions).runner,
        "seconds": round(time.time() - started, 2),
        "inputs": inputs,
        "dedupe": dataclasses.asdict(config),
    }
    if config.semantic and embedding_model is not None:
        run["embeddings"] = dataclasses.asdict(embedding_model)
    stats = finalize(out_folder, run=run)
    if stats["candidates"] != read:
        raise StatsMismatchError(f"dedupe read {read} candidates but wrote {stats['candidates']}")
    return stats
