"""Complete checkpoints: a resume from one continues exactly where the run stopped.

A checkpoint folder holds `model/` (the Hugging Face `save_pretrained` layout, loadable with
`ImageBertForPreTraining.from_pretrained`) and `trainer_state.pt`: optimizer, scheduler, step,
stage, every RNG (Python, NumPy, torch CPU/CUDA, the region-masking generator) and each rank's
data position. It is written beside the old one and swapped in by renames, so a kill during a
save leaves the previous checkpoint whole.

On an object store (a run folder on gs:// or s3://) nothing renames, so a checkpoint is
published instead (`publish_checkpoint`): the local checkpoint's files are uploaded under
`checkpoints/step-NNNNNNNNN/`, and a `COMPLETE` marker listing every file and its size is
written last. A reader (`find_remote_checkpoint`) takes the highest step whose marker is there
and whose files all are, with those sizes; a folder without its marker (an upload killed
halfway) is never read, and the next publish deletes it with the older checkpoints (marker
first, so a half-deleted checkpoint is never complete either).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lait.dataset.storage import filesystem, join

MODEL_DIR = "model"
STATE_FILE = "trainer_state.pt"
REMOTE_CHECKPOINTS_DIR = "checkpoints"  # on an object store, beside the stage's final/
COMPLETE_MARKER = "COMPLETE"
STEP_PREFIX = "step-"


class CheckpointError(ValueError):
    """A checkpoint is missing or incomplete."""


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state a training step draws from."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state(),
    }


def restore_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["generator"])


def save_checkpoint(
    folder: str | os.PathLike[str],
    model: Any,
    state: dict[str, Any],
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write `model` (a PreTrainedModel) and `state` to `folder` atomically; return the folder."""
    target = Path(folder)
    staging = target.with_name(target.name + ".tmp")
    previous = target.with_name(target.name + ".old")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging / MODEL_DIR)
    torch.save(state, staging / STATE_FILE)
    for name, text in (extra_files or {}).items():
        (staging / name).write_text(text, encoding="utf-8")
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    staging.rename(target)
    shutil.rmtree(previous, ignore_errors=True)
    return target


def find_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The complete checkpoint in `folder`, or None. A leftover `.old` (a save killed between
    its two renames) counts."""
    target = Path(folder)
    for candidate in (target, target.with_name(target.name + ".old")):
        if (candidate / STATE_FILE).exists() and (candidate / MODEL_DIR).is_dir():
            return candidate
    return None


def load_state(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The trainer state of a checkpoint folder."""
    path = Path(folder) / STATE_FILE
    if not path.exists():
        raise CheckpointError(f"{folder} is not a complete checkpoint (no {STATE_FILE})")
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return state


def remote_checkpoint_name(step: int) -> str:
    """`step-000000010`: names that sort by step."""
    return f"{STEP_PREFIX}{step:09d}"


def publish_checkpoint(local: str | os.PathLike[str], stage_url: str, step: int) -> str:
    """Upload the local checkpoint folder `local` as `stage_url/checkpoints/step-N/`; return
    its URL.

    The files go first, the `COMPLETE` marker (every file's size) last, so the checkpoint
    counts only once whole; then every other checkpoint folder of the stage (older ones, and
    leftovers of a killed upload) is deleted.
    """
    fs, root = filesystem(stage_url)
    base = join(root, REMOTE_CHECKPOINTS_DIR)
    target = join(base, remote_checkpoint_name(step))
    folder = Path(local)
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    names = [path.relative_to(folder).as_posix() for path in files]
    marker = join(target, COMPLETE_MARKER)
    if fs.exists(marker):  # the same step published before: incomplete while it is replaced
        fs.rm_file(marker)
    fs.put([str(path) for path in files], [join(target, name) for name in names])
    sizes = {name: path.stat().st_size for name, path in zip(names, files, strict=True)}
    fs.pipe_file(marker, json.dumps({"step": step, "files": sizes}, indent=1).encode())
    for other in _checkpoint_folders(fs, base):
        if other != target:
            _delete_checkpoint(fs, other)
    return _url(stage_url, root, target)


def find_remote_checkpoint(stage_url: str) -> tuple[str, int] | None:
    """(URL, step) of the latest complete checkpoint published under `stage_url`, or None."""
    fs, root = filesystem(stage_url)
    fs.invalidate_cache()  # listings are cached; another process may have published since
    best: tuple[str, int] | None = None
    for folder in _checkpoint_folders(fs, join(root, REMOTE_CHECKPOINTS_DIR)):
        manifest = _complete_manifest(fs, folder)
        if manifest is not None and (best is None or manifest["step"] > best[1]):
            best = (folder, int(manifest["step"]))
    return None if best is None else (_url(stage_url, root, best[0]), best[1])


def fetch_checkpoint(url: str, local: str | os.PathLike[str]) -> Path:
    """Download the complete checkpoint at `url` into the local folder `local` (replacing
    it); the files arrive in a staging folder renamed into place, so `find_checkpoint`
    never sees half a download."""
    fs, root = filesystem(url)
    manifest = _complete_manifest(fs, root)
    if manifest is None:
        raise CheckpointError(f"{url} is not a complete checkpoint (no {COMPLETE_MARKER})")
    target = Path(local)
    staging = target.with_name(target.name + ".download")
    shutil.rmtree(staging, ignore_errors=True)
    names = sorted(manifest["files"])
    for name in names:
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
    fs.get([join(root, name) for name in names], [str(staging / name) for name in names])
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def delete_remote_checkpoints(stage_url: str) -> int:
    """Delete every checkpoint published under `stage_url` (a run started afresh); return
    how many."""
    fs, root = filesystem(stage_url)
    folders = _checkpoint_folders(fs, join(root, REMOTE_CHECKPOINTS_DIR))
    for folder in folders:
        _delete_checkpoint(fs, folder)
    return len(folders)


def _checkpoint_folders(fs: Any, base: str) -> list[str]:
    fs.invalidate_cache(base)
    if not fs.exists(base):
        return []
    return sorted(
        path.rstrip("/")
        for path in fs.ls(base, detail=False)
        if path.rstrip("/").rsplit("/", 1)[-1].startswith(STEP_PREFIX)
    )


def _complete_manifest(fs: Any, folder: str) -> dict[str, Any] | None:
    """The marker of a checkpoint folder whose files are all there with their sizes."""
    try:
        manifest: dict[str, Any] = json.loads(fs.cat_file(join(folder, COMPLETE_MARKER)))
    except FileNotFoundError:
        return None
    present = {
        path.removeprefix(folder.rstrip("/") + "/"): info["size"]
        for path, info in fs.find(folder, detail=True).items()
    }
    if any(present.get(name) != size for name, size in manifest["files"].items()):
        return None
    return manifest


def _delete_checkpoint(fs: Any, folder: str) -> None:
    marker = join(folder, COMPLETE_MARKER)
    if fs.exists(marker):
        fs.rm_file(marker)
    fs.rm(folder, recursive=True)


def _url(url: str, root: str, path: str) -> str:
    """`path` (as the filesystem names it) written the way `url` (naming `root`) is."""
    prefix = url[: len(url.rstrip("/")) - len(root.rstrip("/"))]
    return prefix + path
