"""Run the LAIT pipeline: Beam options, the local runner, the progress bar, final stats.

Beam's own options pass straight through (`--runner DataflowRunner --project P --region R
--temp_location gs://... --sdk_container_image ...`). Without `--runner`, or with
`--runner DirectRunner`, the job runs locally on Beam's FnApiRunner (what DirectRunner
uses for batch jobs); naming it directly skips DirectRunner's attempt to download the
Prism runner, which fails offline.

Local running mode: `in_memory` (one process) unless `--direct_running_mode` says
otherwise. The heavy stages already run in thread pools whose work (network, JPEG
decoding, resizing, torch) releases the GIL, and measured here (bench/download.py, 2 cores)
the in-process mode downloads and resizes 2.2x faster than `multi_processing`, whose
workers pass every image through the runner's gRPC data plane. On a many-core machine,
try `--direct_running_mode multi_processing --direct_num_workers N`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import time
from importlib import metadata
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions

from lait.dataset import add_run_info, prepare_folder
from lait.dataset.layout import STAGING_DIR
from lait.dataset.storage import check_output_location
from lait.kill_points import kill_point
from pipeline.beam_options import local_runner, pipeline_options
from pipeline.config import PipelineConfig
from pipeline.graph import BuildDataset
from pipeline.outcomes import NAMESPACE
from pipeline.progress import progress_bar
from pipeline.retry import retry_failed
from pipeline.staging import (
    REFETCH_TRANSIENT_KEY,
    RETRY_KEY,
    read_job,
    remove_staging,
    write_job,
)

_VERSIONED = ["lait", "apache-beam", "img2dataset", "open-clip-torch", "torch", "pyarrow"]


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _counters(result: Any) -> dict[str, int]:
    try:
        queried = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))
    except (NotImplementedError, AttributeError):
        return {}
    counts: dict[str, int] = {}
    for counter in queried["counters"]:
        name = counter.key.metric.name
        counts[name] = counts.get(name, 0) + int(counter.committed or counter.attempted or 0)
    return counts


class UnfinishedRunError(FileExistsError):
    """The output folder holds an unfinished run that this command cannot resume (other fetch
    or image settings, or a `--retry-failed` run resumed without the flag)."""


def _fetch_settings(config: PipelineConfig) -> dict[str, Any]:
    # What staged fetch outcomes depend on; any other setting may change between reruns.
    settings = {
        "fetch": dataclasses.asdict(config.fetch),
        "image": dataclasses.asdict(config.image),
    }
    loaded: dict[str, Any] = json.loads(json.dumps(settings, default=str))
    return loaded


def same_fetch_settings(staged: dict[str, Any], config: PipelineConfig) -> bool:
    """Whether a staged job's fetch and image settings are `config`'s."""
    settings = _fetch_settings(config)
    return all(staged.get(name) == value for name, value in settings.items())


def prepare_output(config: PipelineConfig) -> bool:
    """Make the output folder ready; True when this run resumes a killed one.

    A run is finished once its staging folder is gone (`pipeline.staging.remove_staging`
    removes `job.json` last), so a folder holding `_staging/job.json` holds a killed run,
    wherever it was killed: fetching, writing shards, writing stats.json, or cleaning up.
    That run is resumed: its committed fetch batches are kept and only the dataset files are
    redone. An unfinished run with other fetch or image settings is refused
    (`UnfinishedRunError`), and so is an unfinished `--retry-failed` run (it resumes with
    `--retry-failed`); anything else follows `prepare_folder` (a folder holding files is
    refused unless `output.overwrite`).

    With `output.retry_failed`, a resumed run fetches again the URLs whose staged outcome was
    a transient failure (`pipeline.transient`), instead of reusing it.
    """
    folder = config.output.folder
    check_output_location(folder)
    settings = _fetch_settings(config)
    staged = None if config.output.overwrite else read_job(folder)
    if staged is not None:
        if staged.get(RETRY_KEY) is not None:
            raise UnfinishedRunError(
                f"{folder} holds an unfinished --retry-failed run; rerun it with "
                "--retry-failed to finish it, or pass --overwrite to start again"
            )
        if not same_fetch_settings(staged, config):
            raise UnfinishedRunError(
                f"{folder} holds an unfinished run with other fetch or image settings; "
                "rerun it with the same settings to resume it, or pass --overwrite "
                "to start again"
            )
        prepare_folder(folder, overwrite=True, keep=(STAGING_DIR,))
        write_job(folder, {**settings, REFETCH_TRANSIENT_KEY: config.output.retry_failed})
        return True
    prepare_folder(folder, overwrite=config.output.overwrite)
    write_job(folder, settings)
    return False


def run_pipeline(
    config: PipelineConfig,
    beam_args: list[str] | None = None,
    *,
    show_progress: bool = True,
    job: str = "pipeline",
) -> dict[str, Any]:
    """Run the job to completion and return the dataset's stats (also in stats.json).

    Rerunning into the folder of a killed run resumes it (`prepare_output`): URLs its
    committed fetch batches answered are not fetched again. With `output.retry_failed`, a
    finished folder gets the retry job of `pipeline.retry` instead, and a killed run is
    resumed with its transient fetch failures fetched again.

    Raises `ClipModelNotNamedError` before any work (nothing read, nothing written) when
    CLIP scoring is on and the config names no model.
    """
    if config.clip.enabled:
        config.clip.require_model()
    if config.output.retry_failed:
        if config.output.overwrite:
            raise ValueError("--retry-failed adds to a run's folder; it cannot go with --overwrite")
        staged = read_job(config.output.folder)
        if staged is None or staged.get(RETRY_KEY) is not None:
            # A finished folder (or a killed retry of one): the retry job of its own.
            return retry_failed(
                config, _fetch_settings(config), beam_args, show_progress=show_progress, job=job
            )
        # A killed run: resumed below, refetching its staged transient failures.
    options, local = pipeline_options(list(beam_args or []))
    if local:
        # The local workers relay harmless start-up warnings ("No semi_persistent_directory")
        # once per process; errors still show.
        logging.getLogger("apache_beam.runners.portability").setLevel(logging.ERROR)
    resumed = prepare_output(config)
    started = time.time()
    with progress_bar(enabled=local and show_progress) as progress_folder:
        pipeline = beam.Pipeline(runner=local_runner() if local else None, options=options)
        _ = pipeline | "LAIT" >> BuildDataset(config, progress_folder)
        result = pipeline.run()
        result.wait_until_finish()
    counters = _counters(result)
    run = {
        "job": job,
        "runner": "FnApiRunner (local)" if local else options.view_as(StandardOptions).runner,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "resumed": resumed,
        "seconds": round(time.time() - started, 2),
        "versions": _versions(),
        "config": config.to_dict(),
        # The report marks `clip_threshold` on the score histogram and its gallery.
        "clip": config.clip.provenance(),
        "clip_threshold": config.clip.provenance()["threshold"],
        "pages": {
            k.removeprefix("pages."): v for k, v in counters.items() if k.startswith("pages.")
        },
    }
    stats = add_run_info(config.output.folder, run)
    kill_point("run_info_added")
    # Every shard has read its images back; the staged copies are no longer needed, and
    # removing them marks the run finished.
    remove_staging(config.output.folder)
    return stats
