"""`--retry-failed`: fetch again what a run rejected for transient reasons, and move what now
passes into new shards.

On a killed run (its `_staging/` still there) the retry is a resume that refetches the URLs
whose staged outcome was a transient failure (`pipeline.run.prepare_output`). On a finished
folder it is a job of its own, which adds to the folder without rewriting what stays:

    rejects/*.parquet ─► split each part: transient fetch rejects │ the rest (kept)
        (read in parallel,        │                                    │
         one part per element)    ▼                                    ▼
                        candidates again ─► fetch + resize ─►   the part rewritten without
                        (one fetch per URL, politely)  CLIP      its transient rows, as
                                    │                            `STEM-rN.parquet`
                                    ▼
        accepted shards' metadata ─► dedupe (existing samples always win) ─► settle
                                    │                                    │
                        new shards, numbered after the last one   new ledger parts
                                                                  `retryN-00000.parquet`

- **CLIP**: the retried candidates are scored with the job's model and fixed thresholds
  (the `threshold` policy; `top_fraction`, whose cut depends on the whole run's scores, is
  refused), then the best caption per image is chosen among them.
- **What is transient** (`pipeline.transient`): timeout, connection_error, http_server_error,
  and http_client_error whose detail is a 429.
- **Dedupe against what is already accepted**: the existing samples' metadata (url, sha256,
  pHash, caption) goes through `Deduplicate` beside the retried candidates, ranked above
  every one of them, so a retried candidate that duplicates a sample is dropped with the
  duplicate reason and no existing sample ever moves; decisions about existing samples are
  ignored. Limits: the existing samples carry no colour thumbnail (it is not stored), so a
  pHash-close pair of an existing and a retried image is judged by its pHash alone (a
  conservative drop); semantic dedupe runs among the retried candidates only when the
  existing samples' embeddings are not at hand, so it is off in a retry.
- **Nothing lost, nothing twice**: accepted + rejected = candidates as before. A retried row
  leaves its part (the part is rewritten without it) and lands once: in a new shard or a
  new ledger part with its new reason (or the same one, if it failed again).
- **Resumable**: `_staging/job.json` holds the retry's base (the shards and ledger parts it
  started from, its generation) and its phase. The base files are deleted only after the job
  has written everything (phase `written`); a rerun of the same command in phase `running`
  removes this generation's files and runs the job again from the same base, reusing the
  fetch batches it committed; in phase `written` it finishes the clean-up.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from dedupe import Deduplicate
from lait.dataset import add_run_info, layout, storage
from lait.dataset.stats import FolderCounts
from lait.dataset.writer import write_rejects_part
from lait.kill_points import kill_point
from lait.record import Record, Status
from pipeline.beam_options import local_runner, pipeline_options
from pipeline.clip import BestCaptionPerImage, ClipScore
from pipeline.config import PipelineConfig
from pipeline.download import IMAGE_FIELDS, Download, DownloadSettings
from pipeline.outcomes import CountOutcome
from pipeline.progress import progress_bar
from pipeline.staging import RETRY_KEY, read_job, remove_staging, staging_folder, write_job
from pipeline.transient import is_transient_failure
from pipeline.write import WriteDataset

# An existing sample's rank in the retry's dedupe: above any CLIP score (cosine * 100 at most).
EXISTING_SAMPLE_RANK = 1e9
_GENERATION_SUFFIX = re.compile(r"-r\d+$")
_RUNNING, _WRITTEN = "running", "written"


class NothingToRetryError(FileNotFoundError):
    """`--retry-failed` on a folder that holds no finished or killed run."""


def rewritten_part_stem(part: str, generation: int) -> str:
    """The name a ledger part gets once retry `generation` rewrote it without its transient
    rows: `rejects/00003.parquet` → `00003-r1` (→ `00003-r2` in the next retry)."""
    stem = part.rsplit("/", 1)[-1].removesuffix(".parquet")
    return f"{_GENERATION_SUFFIX.sub('', stem)}-r{generation}"


def as_candidate(record: Record) -> Record:
    """A ledger row rejected at the fetch, as the live candidate it was before the fetch."""
    blank: dict[str, Any] = {name: None for name in IMAGE_FIELDS}
    return dataclasses.replace(
        record,
        **blank,
        status=Status.CANDIDATE,
        reject_stage=None,
        reject_reason=None,
        reject_detail=None,
        reject_value=None,
        reject_limit=None,
        duplicate_of=None,
    )


def _records_of(folder: str, name: str) -> list[Record]:
    fs, root = storage.filesystem(folder)
    table = storage.read_parquet(fs, storage.join(root, name))
    return [Record.from_metadata(row) for row in table.to_pylist()]


class SplitLedgerPart(beam.DoFn):
    """A ledger part's name in; its transient fetch rejects out as candidates again, and (tag
    `counts`) the counts of the rows it keeps. A part holding transient rows is committed
    again without them under its next name; the original stays until the job is done."""

    COUNTS = "counts"

    def __init__(self, folder: str, generation: int) -> None:
        self.folder = folder
        self.generation = generation

    def process(self, part: str) -> Iterator[Any]:
        rows = _records_of(self.folder, part)
        transient = [r for r in rows if is_transient_failure(r.reject_reason, r.reject_detail)]
        if transient:
            kept = [r for r in rows if not is_transient_failure(r.reject_reason, r.reject_detail)]
            write_rejects_part(self.folder, rewritten_part_stem(part, self.generation), kept)
        else:
            kept = rows
        yield beam.pvalue.TaggedOutput(self.COUNTS, FolderCounts.of_records("rejected", kept))
        for record in transient:
            yield as_candidate(record)


class ReadShardMetadata(beam.DoFn):
    """A shard id in; its samples' metadata out (no pixels), and (tag `counts`) its counts."""

    COUNTS = "counts"

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def process(self, shard_id: int) -> Iterator[Any]:
        records = _records_of(self.folder, layout.shard_parquet_name(shard_id))
        yield beam.pvalue.TaggedOutput(
            self.COUNTS, FolderCounts.of_records("accepted", records, shard_id)
        )
        yield from records


def _ranked_first(record: Record) -> Record:
    # Live again for dedupe's sake, and ranked above every retried candidate.
    return dataclasses.replace(record, status=Status.CANDIDATE, clip_score=EXISTING_SAMPLE_RANK)


def _is_existing(record: Record) -> bool:
    return record.clip_score == EXISTING_SAMPLE_RANK


class RetryFailed(beam.PTransform):
    """The retry job on a finished folder, from a pipeline root (see the module docstring)."""

    def __init__(
        self, config: PipelineConfig, base: dict[str, Any], progress_folder: str | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.base = base
        self.progress_folder = progress_folder

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        config, base = self.config, self.base
        folder, generation = config.output.folder, int(base["generation"])
        ledger = (
            pipeline
            | "LedgerParts" >> beam.Create(sorted(base["parts"]))
            | "SpreadParts" >> beam.Reshuffle()
            | "SplitParts"
            >> beam.ParDo(SplitLedgerPart(folder, generation)).with_outputs(
                SplitLedgerPart.COUNTS, main="retried"
            )
        )
        shards = (
            pipeline
            | "Shards" >> beam.Create(sorted(base["shards"]))
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadShards"
            >> beam.ParDo(ReadShardMetadata(folder)).with_outputs(
                ReadShardMetadata.COUNTS, main="samples"
            )
        )
        settings = DownloadSettings(
            config.fetch,
            config.image,
            config.fetch_threads,
            staging_folder(folder),
            self.progress_folder,
            colour_thumbnails=config.dedupe.perceptual,
        )
        scored = ledger.retried | "Download" >> Download(settings)
        if config.clip.enabled:
            scored = scored | "ClipScore" >> ClipScore(config.clip)
            if config.clip.best_caption_per_image:
                scored = scored | "BestCaption" >> BestCaptionPerImage()
        existing = shards.samples | "RankedFirst" >> beam.Map(_ranked_first)
        dedupe = dataclasses.replace(config.dedupe, semantic=False)
        settled = (
            (scored, existing)
            | "WithExisting" >> beam.Flatten()
            | "Dedupe" >> Deduplicate(dedupe)
            | "OnlyRetried" >> beam.Filter(lambda r: not _is_existing(r))
            | "Settle" >> beam.Map(Record.accepted_if_live)
            | "Count" >> beam.ParDo(CountOutcome())
        )
        kept = (
            ledger[SplitLedgerPart.COUNTS],
            shards[ReadShardMetadata.COUNTS],
        ) | "KeptCounts" >> beam.Flatten()
        return settled | "Write" >> WriteDataset(
            folder,
            config.output.samples_per_shard,
            config.output.rejects_per_part,
            first_shard=int(base["next_shard"]),
            part_prefix=f"retry{generation}-",
            kept_counts=kept,
        )


def _listing(folder: str) -> tuple[list[int], list[str]]:
    """The committed shard ids and ledger part names (`rejects/NAME.parquet`) in `folder`."""
    fs, root = storage.filesystem(folder)
    shards = sorted(
        shard_id
        for path in fs.ls(root, detail=False)
        if (shard_id := layout.parquet_shard_id(path)) is not None
    )
    rejects = storage.join(root, layout.REJECTS_DIR)
    parts = []
    if fs.exists(rejects):
        for path in sorted(fs.ls(rejects, detail=False)):
            name = path.rsplit("/", 1)[-1]
            if name.endswith(".parquet") and not storage.is_temporary(name):
                parts.append(f"{layout.REJECTS_DIR}/{name}")
    return shards, parts


def _start(config: PipelineConfig, settings: dict[str, Any]) -> dict[str, Any]:
    """Record a new retry's base in `_staging/job.json`; its state."""
    folder = config.output.folder
    fs, root = storage.filesystem(folder)
    stats_path = storage.join(root, layout.STATS_FILE)
    if not fs.exists(stats_path):
        raise NothingToRetryError(
            f"{folder} holds no finished or killed run to retry (no stats.json, no _staging/); "
            "run the job without --retry-failed first"
        )
    stats = json.loads(fs.cat_file(stats_path))
    previous = stats.get("run", {})
    shards, parts = _listing(folder)
    retry = {
        "generation": len(previous.get("retries", [])) + 1,
        "shards": shards,
        "next_shard": (max(shards) + 1) if shards else 0,
        "parts": parts,
        "phase": _RUNNING,
        "run": previous,
    }
    write_job(folder, {**settings, RETRY_KEY: retry})
    return retry


def _remove_generation_files(folder: str, base: dict[str, Any]) -> None:
    """Delete what a killed attempt of this retry wrote (shards numbered from the base's
    next one, ledger parts not in the base, partial files), so the rerun starts from the
    base alone."""
    fs, root = storage.filesystem(folder)
    first_new = int(base["next_shard"])
    for path in fs.ls(root, detail=False):
        name = path.rsplit("/", 1)[-1]
        number = re.match(r"^(\d{5,})(\.tar|\.parquet|_stats\.json)$", name)
        if storage.is_temporary(name) or (number and int(number.group(1)) >= first_new):
            fs.rm(path)
    rejects = storage.join(root, layout.REJECTS_DIR)
    if fs.exists(rejects):
        base_parts = {part.rsplit("/", 1)[-1] for part in base["parts"]}
        for path in fs.ls(rejects, detail=False):
            if path.rsplit("/", 1)[-1] not in base_parts:
                fs.rm(path)


def _finish(config: PipelineConfig, retry: dict[str, Any]) -> None:
    """Phase `written`: the base ledger parts that were rewritten are deleted."""
    fs, root = storage.filesystem(config.output.folder)
    generation = int(retry["generation"])
    for part in retry["parts"]:
        original = storage.join(root, part)
        rewritten = layout.rejects_part_name(rewritten_part_stem(part, generation))
        if fs.exists(storage.join(root, rewritten)) and fs.exists(original):
            fs.rm(original)


def retry_failed(
    config: PipelineConfig,
    settings: dict[str, Any],
    beam_args: list[str] | None = None,
    *,
    show_progress: bool = True,
    job: str = "pipeline",
) -> dict[str, Any]:
    """Run (or resume) `--retry-failed` on a finished folder; the dataset's new stats."""
    from pipeline.run import UnfinishedRunError, same_fetch_settings

    folder = config.output.folder
    if config.clip.enabled and config.clip.policy != "threshold":
        raise ValueError(
            "--retry-failed scores the retried candidates against fixed CLIP thresholds; the "
            "top_fraction policy's cut depends on the whole run's scores. Retry with "
            "--set clip.policy=threshold --set clip.min_score=S (e.g. the lowest clip_score "
            "among the folder's samples)"
        )
    storage.check_output_location(folder)
    state = read_job(folder)
    resumed = state is not None
    if state is None:
        retry = _start(config, settings)
    else:
        retry = state[RETRY_KEY]
        if retry["phase"] == _RUNNING and not same_fetch_settings(state, config):
            raise UnfinishedRunError(
                f"{folder} holds an unfinished --retry-failed run with other fetch or image "
                "settings; rerun it with the same settings to finish it"
            )
        if retry["phase"] == _RUNNING:
            _remove_generation_files(folder, retry)
    started = time.time()
    if retry["phase"] == _RUNNING:
        options, local = pipeline_options(list(beam_args or []))
        if local:  # as in `pipeline.run`: the local workers' harmless start-up warnings
            logging.getLogger("apache_beam.runners.portability").setLevel(logging.ERROR)
        with progress_bar(enabled=local and show_progress) as progress_folder:
            pipeline = beam.Pipeline(runner=local_runner() if local else None, options=options)
            _ = pipeline | "LAIT" >> RetryFailed(config, retry, progress_folder)
            pipeline.run().wait_until_finish()
        retry = {**retry, "phase": _WRITTEN}
        write_job(folder, {**settings, RETRY_KEY: retry})
    kill_point("retry_written")
    _finish(config, retry)
    previous = dict(retry["run"])
    this = {
        "job": f"{job} --retry-failed",
        "generation": retry["generation"],
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "resumed": resumed,
        "seconds": round(time.time() - started, 2),
    }
    stats = add_run_info(folder, {**previous, "retries": [*previous.get("retries", []), this]})
    remove_staging(folder)
    return stats
