"""A graph without CLIP scoring never imports the CLIP model step (open_clip and the demo
CLIP's loader take seconds to import, in the launcher and again on every worker); a graph
with it does. Each case runs in a fresh interpreter, so modules other tests imported do
not count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_BUILD = """
import dataclasses, json, sys
import apache_beam as beam
from pipeline.clip import DEMO_CLIP_MODEL, ClipConfig
from pipeline.config import ListSource, OutputConfig, PipelineConfig, SourcesConfig
from pipeline.graph import BuildDataset

config = PipelineConfig(
    sources=SourcesConfig(lists=(ListSource(path=sys.argv[1], format="cc"),)),
    clip=ClipConfig(model=DEMO_CLIP_MODEL, enabled=sys.argv[2] == "on"),
    output=OutputConfig(folder=sys.argv[3]),
)
pipeline = beam.Pipeline()
_ = pipeline | BuildDataset(config)  # built, not run
print(json.dumps({name: name in sys.modules for name in sys.argv[4:]}))
"""

MODULES = ("pipeline.clip.scorer", "lait.models.clip", "open_clip")


@pytest.mark.parametrize("clip", ["off", "on"])
def test_only_a_graph_that_scores_imports_the_clip_model_step(tmp_path: Path, clip: str) -> None:
    listing = tmp_path / "cc.tsv"
    listing.write_text("a red square\thttp://127.0.0.1:9/a.jpg\n")
    done = subprocess.run(
        [sys.executable, "-c", _BUILD, str(listing), clip, str(tmp_path / "out"), *MODULES],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert imported == dict.fromkeys(MODULES, clip == "on")
