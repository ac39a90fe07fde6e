"""A 2-process `torchrun` DDP run on CPU (gloo): the same trainer, one code path."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pretrain.synthetic import write_scene_folder

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from pretrain.regions import ClipGridRegions
    from pretrain.synthetic import tiny_clip
    from pretrain.trainer import run_plan

    data, out = sys.argv[1], sys.argv[2]
    model, preprocess, tokenizer = tiny_clip("vit", seed=0)
    vocabulary = ["circle", "star", "background"]
    regions = ClipGridRegions(model, preprocess, tokenizer, vocabulary=vocabulary)
    plan = {
        "name": "ddp", "seed": 0, "holdout": 0.1, "text_model": "none", "num_workers": 0,
        "log_every": 1, "save_every": 2,
        "model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "intermediate_size": 64, "contrastive_dim": 16},
        "evaluate": {"after_each_stage": True, "max_samples": 16, "top_k": 4},
        "stages": [
            {"name": "web", "sources": [{"path": data}], "steps": 4, "batch_size": 4,
             "lr": 1e-3, "objectives": {"itc": 1.0}},
            {"name": "again", "sources": [{"path": data}], "steps": 2, "batch_size": 4,
             "lr": 1e-3, "objectives": {"mrfr": 0.0}},
        ],
    }
    result = run_plan(plan, out_dir=out, region_source=regions, progress=False, final_eval=False)
    print(json.dumps({"rank": int(os.environ["RANK"]), "world": int(os.environ["WORLD_SIZE"]),
                      "steps": [s["steps"] for s in result["stages"]]}))
    """
)


@pytest.mark.slow  # ~50 s: two processes each import torch, transformers and open_clip
def test_torchrun_two_processes_on_cpu(tmp_path: Path) -> None:
    data = write_scene_folder(str(tmp_path / "web"), 32, seed=5, samples_per_shard=8)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun is not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    process = subprocess.Popen(
        [
            str(torchrun if torchrun.exists() else "torchrun"),
            "--standalone",  # a free local port for the rendezvous
            "--nproc_per_node",
            "2",
            str(script),
            data,
            str(tmp_path / "out"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # so a hung run's workers can be ended with it
    )
    try:
        stdout, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    # The two ranks print at once, so their lines may run together: find each object.
    reports = [json.loads(found) for found in re.findall(r"\{[^{}]*\}", done.stdout)]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    assert all(r["world"] == 2 and r["steps"] == [4, 2] for r in reports)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["stages"][0]["samples"] == 4 * 4 * 2  # steps x batch x ranks
    state_file = tmp_path / "out" / "01-web" / "checkpoint" / "trainer_state.pt"
    import torch

    state = torch.load(state_file, weights_only=False)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert (tmp_path / "out" / "02-again" / "final" / "model.safetensors").exists()
