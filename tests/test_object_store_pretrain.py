"""`lait pretrain --out gs://... / s3://...`: a run folder in a bucket, on the local emulators.

The trainer works in a local temporary copy and publishes to the bucket: each checkpoint's
files, then its COMPLETE marker; a stage's final/ and then its summary. These tests read the
shards from the bucket and write the run there, load the result the Hugging Face way, kill a
run after its first published checkpoint and rerun it from the bucket.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import fsspec
import pytest
import torch
import yaml
from object_stores import ObjectStore, server, store

from lait import cli

__all__ = ["server", "store"]  # the fixtures, imported for pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scenes(store: ObjectStore) -> str:
    from pretrain.synthetic import write_scene_folder

    return write_scene_folder(store.unique_url("scenes"), 24, seed=1, samples_per_shard=12)


def _plan(tmp_path: Path, data: str, steps: int, save_every: int) -> Path:
    from tiny_plans import demo_clip_plan

    plan = {**demo_clip_plan(data, steps=steps), "save_every": save_every, "log_every": 1}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def _names(fs: fsspec.AbstractFileSystem, url: str) -> list[str]:
    """Every object under `url`, relative to it."""
    fs.invalidate_cache()
    root = fsspec.core.url_to_fs(url)[1].rstrip("/")
    return sorted(path.removeprefix(root + "/") for path in fs.find(url))


def _log_steps(fs: fsspec.AbstractFileSystem, url: str) -> list[int]:
    return [json.loads(line)["step"] for line in fs.cat(url).decode().splitlines()]


def test_pretrain_reads_and_writes_the_bucket(
    store: ObjectStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20 steps from bucket shards into a bucket run folder: checkpoint, final/ (loadable with
    AutoModel from a downloaded copy, and evaluated straight from the bucket), logs and
    summaries in the bucket; the local working copy is gone afterwards."""
    from transformers import AutoModel

    from pretrain.model import ImageBertForPreTraining, ImageBertModel

    data, out = _scenes(store), store.unique_url("run")
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))  # where the working copy goes
    args = ["pretrain", str(_plan(tmp_path, data, steps=20, save_every=10)), "--out", out]
    assert cli.main([*args, "--no-progress"]) == 0
    assert f"final checkpoint: {out}/01-web/final" in capsys.readouterr().out
    assert list(work.glob("lait-run-*")) == []  # the local working copy was removed
    assert not Path(f"{store.scheme}:").exists()  # and no local `gs:/...` folder was made

    fs = store.filesystem()
    names = _names(fs, out)
    assert {"plan.yaml", "summary.json", "01-web/summary.json", "01-web/log.jsonl"} <= set(names)
    assert {"01-web/final/config.json", "01-web/final/regions.json"} <= set(names)
    checkpoints = {n.split("/")[2] for n in names if n.startswith("01-web/checkpoints/")}
    assert checkpoints == {"step-000000020"}  # step 10's was deleted once 20's was complete
    assert "01-web/checkpoints/step-000000020/COMPLETE" in names
    assert any(n.startswith("01-web/tb/") for n in names)
    assert not [n for n in names if n.endswith((".partial", ".tmp", ".old", ".download"))]
    assert _log_steps(fs, f"{out}/01-web/log.jsonl") == list(range(1, 21))
    summary = json.loads(fs.cat(f"{out}/summary.json"))
    assert summary["final"] == f"{out}/01-web/final" and summary["out_dir"] == out
    assert summary["stages"][0]["steps"] == 20 and "resumed_from_step" not in summary["stages"][0]

    local = tmp_path / "final"
    fs.get(f"{out}/01-web/final/", str(local) + "/", recursive=True)
    encoder = AutoModel.from_pretrained(local)
    assert isinstance(encoder, ImageBertModel)
    last = tmp_path / "last"
    fs.get(f"{out}/01-web/checkpoints/step-000000020/", str(last) + "/", recursive=True)
    trained = ImageBertForPreTraining.from_pretrained(last / "model").imagebert.state_dict()
    assert trained.keys() == encoder.state_dict().keys()
    assert all(torch.equal(trained[k], v) for k, v in encoder.state_dict().items())

    evaluate = ["evaluate", f"{out}/01-web/final", data, "--max-samples", "12", "--top-k", "4"]
    assert cli.main([*evaluate, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["samples"] > 0 and 0.0 <= figures["i2t"]["r1"] <= 1.0

    # The same command again: the stage is done in the bucket, so nothing trains.
    stage_summary = fs.cat(f"{out}/01-web/summary.json")
    assert cli.main([*args, "--no-progress"]) == 0
    assert "resumed" not in capsys.readouterr().out
    assert fs.cat(f"{out}/01-web/summary.json") == stage_summary
    assert _log_steps(fs, f"{out}/01-web/log.jsonl") == list(range(1, 21))


@pytest.mark.slow
def test_a_pretrain_killed_after_a_checkpoint_reruns_from_the_bucket(
    store: ObjectStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lait pretrain --out BUCKET/run` SIGKILLed once its first checkpoint's marker is in
    the bucket, then the same command again: it resumes from that checkpoint (the log says
    so, and the bucket's log holds every step once), and no partial checkpoint is left."""
    from pretrain.checkpoint import find_remote_checkpoint

    data, out = _scenes(store), store.unique_url("run")
    args = ["pretrain", str(_plan(tmp_path, data, steps=20, save_every=5)), "--out", out]
    args += ["--no-progress"]
    log = tmp_path / "killed.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import sys; from lait.cli import main; sys.exit(main({args!r}))",
            ],
            start_new_session=True,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        fs = store.filesystem()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            fs.invalidate_cache()
            if fs.glob(f"{out}/01-web/checkpoints/*/COMPLETE"):
                break
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert fs.glob(f"{out}/01-web/checkpoints/*/COMPLETE"), log.read_text()[-3000:]
    if fs.exists(f"{out}/01-web/summary.json"):
        pytest.skip("the machine was too fast: the run finished before it could be killed")
    found = find_remote_checkpoint(f"{out}/01-web")
    assert found is not None
    url, step = found
    assert step in (5, 10, 15) and url == f"{out}/01-web/checkpoints/step-{step:09d}"
    assert _log_steps(fs, f"{out}/01-web/log.jsonl") == list(range(1, step + 1))

    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert f"stage web resumed from step {step}" in printed
    assert _log_steps(fs, f"{out}/01-web/log.jsonl") == list(range(1, 21))
    summary = json.loads(fs.cat(f"{out}/01-web/summary.json"))
    assert summary["steps"] == 20 and summary["resumed_from_step"] == step
    names = _names(fs, f"{out}/01-web/checkpoints")
    assert {n.split("/")[0] for n in names} == {"step-000000020"}, names
    assert "step-000000020/COMPLETE" in names


def test_an_upload_killed_halfway_is_never_read_and_the_next_publish_removes_it(
    store: ObjectStore, tmp_path: Path
) -> None:
    """A checkpoint whose upload dies after some files: readers still find the previous one,
    a download of it is whole, and the next complete publish deletes both older folders."""
    from pretrain import checkpoint

    stage = store.unique_url("stage")
    local = tmp_path / "checkpoint"

    def write(step: int) -> None:
        (local / "model").mkdir(parents=True, exist_ok=True)
        (local / "model" / "weights.bin").write_bytes(bytes([step]) * (1000 + step))
        (local / "trainer_state.pt").write_bytes(b"state %d" % step)

    write(5)
    checkpoint.publish_checkpoint(local, stage, 5)
    assert checkpoint.find_remote_checkpoint(stage) == (f"{stage}/checkpoints/step-000000005", 5)

    write(10)
    fs_class = type(store.filesystem())

    class Killed(Exception):
        pass

    real_put = fs_class._put  # gcsfs and s3fs are async: `put` runs `_put`

    async def put_one_then_die(self: Any, lpath: list[str], rpath: list[str], **kw: Any) -> None:
        await real_put(self, lpath[:1], rpath[:1], **kw)
        raise Killed

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fs_class, "_put", put_one_then_die)
        fs_class.clear_instance_cache()  # an instance binds its sync methods when made
        with pytest.raises(Killed):
            checkpoint.publish_checkpoint(local, stage, 10)
    fs_class.clear_instance_cache()
    fs = store.filesystem()
    assert _names(fs, f"{stage}/checkpoints") == [
        "step-000000005/COMPLETE",
        "step-000000005/model/weights.bin",
        "step-000000005/trainer_state.pt",
        "step-000000010/model/weights.bin",  # half of step 10, without its marker
    ]
    found = checkpoint.find_remote_checkpoint(stage)
    assert found == (f"{stage}/checkpoints/step-000000005", 5)
    copy = checkpoint.fetch_checkpoint(found[0], tmp_path / "resume" / "checkpoint")
    assert (copy / "model" / "weights.bin").read_bytes() == bytes([5]) * 1005
    assert (copy / "trainer_state.pt").read_bytes() == b"state 5"
    # A marker whose files are not all there (a size differs) does not count either.
    fs.pipe(f"{stage}/checkpoints/step-000000005/trainer_state.pt", b"cut")
    assert checkpoint.find_remote_checkpoint(stage) is None
    with pytest.raises(checkpoint.CheckpointError, match="not a complete checkpoint"):
        checkpoint.fetch_checkpoint(found[0], tmp_path / "again")

    write(15)
    assert checkpoint.publish_checkpoint(local, stage, 15) == f"{stage}/checkpoints/step-000000015"
    assert {n.split("/")[0] for n in _names(fs, f"{stage}/checkpoints")} == {"step-000000015"}
    assert checkpoint.find_remote_checkpoint(stage) == (f"{stage}/checkpoints/step-000000015", 15)
    assert checkpoint.delete_remote_checkpoints(stage) == 1
    assert checkpoint.find_remote_checkpoint(stage) is None


def test_a_published_folder_mirrors_the_local_one(store: ObjectStore, tmp_path: Path) -> None:
    """A retrained final/ whose model file keeps its size still replaces the bucket's, and a
    file it no longer has goes; an append-only folder (TensorBoard's) only gains files."""
    from pretrain.run_folder import RunFolder

    run = RunFolder(store.unique_url("run"))
    assert run.is_remote and run.local.is_dir()
    final = run.local / "01-web" / "final"
    final.mkdir(parents=True)
    (final / "model.safetensors").write_bytes(b"A" * 64)
    (final / "old.json").write_text("{}")
    run.publish("01-web", "final")
    (final / "model.safetensors").write_bytes(b"B" * 64)  # same size, other weights
    (final / "old.json").unlink()
    run.publish("01-web", "final")
    fs = store.filesystem()
    assert _names(fs, run.url("01-web", "final")) == ["model.safetensors"]
    assert fs.cat(run.url("01-web", "final", "model.safetensors")) == b"B" * 64

    tb = run.local / "01-web" / "tb"
    tb.mkdir()
    (tb / "events.1").write_bytes(b"first run")
    run.publish("01-web", "tb", append_only=True)
    (tb / "events.1").unlink()  # a rerun's working copy starts without the old event file
    (tb / "events.2").write_bytes(b"second run")
    run.publish("01-web", "tb", append_only=True)
    assert _names(fs, run.url("01-web", "tb")) == ["events.1", "events.2"]
    assert run.fetch("01-web", "tb") and sorted(p.name for p in tb.iterdir()) == [
        "events.1",
        "events.2",
    ]
    assert not run.fetch("01-web", "no-such-file")
    run.close()
    assert not run.local.exists()
