"""A 2-process `torchrun` DDP run whose run folder is in a bucket (moto's S3 on loopback).

Rank 0 alone publishes (checkpoints, final/, logs, summaries); rank 1 downloads the first
stage's final/ from the bucket to start the second stage from, with no disk shared with rank
0. S3 only: the trainer's bucket code is one fsspec path for both stores, and the GCS side of
it is covered by tests/test_object_store_pretrain.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from object_stores import ObjectStore, pointed_at, s3_server

from pretrain.synthetic import write_scene_folder

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from pretrain import run_folder
    from pretrain.regions import ClipGridRegions
    from pretrain.synthetic import tiny_clip
    from pretrain.trainer import run_plan

    published = []
    for name in ("publish", "publish_checkpoint"):
        real = getattr(run_folder.RunFolder, name)
        def record(self, *args, _real=real, _name=name, **kwargs):
            if self.is_remote:
                published.append(_name)
            return _real(self, *args, **kwargs)
        setattr(run_folder.RunFolder, name, record)

    data, out = sys.argv[1], sys.argv[2]
    model, preprocess, tokenizer = tiny_clip("vit", seed=0)
    regions = ClipGridRegions(model, preprocess, tokenizer, vocabulary=["circle", "background"])
    plan = {
        "name": "ddp", "seed": 0, "holdout": 0.1, "text_model": "none", "num_workers": 0,
        "log_every": 1, "save_every": 2,
        "model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "intermediate_size": 64, "contrastive_dim": 16},
        "evaluate": {"after_each_stage": False},
        "stages": [
            {"name": "web", "sources": [{"path": data}], "steps": 4, "batch_size": 4,
             "lr": 1e-3, "objectives": {"itc": 1.0}},
            {"name": "again", "sources": [{"path": data}], "steps": 2, "batch_size": 4,
             "lr": 1e-3, "objectives": {"itc": 1.0}},
        ],
    }
    result = run_plan(plan, out_dir=out, region_source=regions, progress=False, final_eval=False)
    print(json.dumps({"rank": int(os.environ["RANK"]), "published": len(published),
                      "steps": [s["steps"] for s in result["stages"]]}))
    """
)


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStore]:
    pytest.importorskip("moto.server")
    started = s3_server()
    store = started.__enter__()
    with pointed_at(store, monkeypatch):
        yield store
    started.__exit__(None, None, None)


@pytest.mark.slow  # ~40 s: two processes each import torch, transformers and open_clip
def test_torchrun_two_processes_write_their_run_folder_to_the_bucket(
    bucket: ObjectStore, tmp_path: Path
) -> None:
    data = write_scene_folder(str(tmp_path / "web"), 32, seed=5, samples_per_shard=8)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun is not installed")
    out = bucket.unique_url("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    launcher = str(torchrun if torchrun.exists() else "torchrun")
    process = subprocess.Popen(
        [launcher, "--standalone", "--nproc_per_node", "2", str(script), data, out],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    assert process.returncode == 0, stderr[-3000:]
    reports = {r["rank"]: r for r in map(json.loads, re.findall(r"\{[^{}]*\}", stdout))}
    assert sorted(reports) == [0, 1]
    assert all(r["steps"] == [4, 2] for r in reports.values())
    assert reports[1]["published"] == 0 and reports[0]["published"] > 0  # rank 0 alone

    fs = bucket.filesystem()
    fs.invalidate_cache()
    summary = json.loads(fs.cat(f"{out}/summary.json"))
    assert summary["final"] == f"{out}/02-again/final"
    assert summary["stages"][0]["samples"] == 4 * 4 * 2  # steps x batch x ranks
    for stage, step in (("01-web", 4), ("02-again", 2)):
        assert fs.exists(f"{out}/{stage}/final/model.safetensors")
        markers = fs.glob(f"{out}/{stage}/checkpoints/*/COMPLETE")
        assert [m.rsplit("/", 2)[-2] for m in markers] == [f"step-{step:09d}"]
    log = fs.cat(f"{out}/01-web/log.jsonl").decode().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2, 3, 4]
