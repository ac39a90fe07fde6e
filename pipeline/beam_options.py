"""Beam pipeline options from the command line, and the local runner LAIT uses.

Without `--runner`, or with `--runner DirectRunner`, a job runs on Beam's FnApiRunner (what
DirectRunner uses for batch jobs); naming it directly skips DirectRunner's attempt to
download the Prism runner, which fails offline. See `pipeline.run` for the running mode.
"""

from __future__ import annotations

import os

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

_LOCAL_RUNNERS = {None, "DirectRunner", "FnApiRunner"}


def pipeline_options(beam_args: list[str]) -> tuple[PipelineOptions, bool]:
    """Beam options from the pass-through arguments, and whether the run is local."""
    options = PipelineOptions(beam_args)
    runner = options.view_as(StandardOptions).runner
    local = runner in _LOCAL_RUNNERS
    direct = options.view_as(DirectOptions)
    if (
        local
        and direct.direct_running_mode != "in_memory"
        and "--direct_num_workers" not in (" ".join(beam_args))
    ):
        direct.direct_num_workers = os.cpu_count() or 1
    return options, local


def local_runner() -> FnApiRunner:
    """The runner for local jobs."""
    return FnApiRunner()
