"""Complete checkpoints: a resume from one continues exactly where the run stopped.

A checkpoint folder holds `model/` (the Hugging Face `save_pretrained` layout, loadable with
`ImageBertForPreTraining.from_pretrained`) and `trainer_state.pt`: optimizer, scheduler, step,
stage, every RNG (Python, NumPy, torch CPU/CUDA, the region-masking generator) and each rank's
data position. It is written beside the old one and swapped in by renames, so a kill during a
save leaves the previous checkpoint whole.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

MODEL_DIR = "model"
STATE_FILE = "trainer_state.pt"


class CheckpointError(ValueError):
    """A checkpoint is missing or incomplete."""


class RunFolderError(ValueError):
    """A run folder that the trainer cannot write: it must be a local path."""


def require_local_run_folder(folder: str | os.PathLike[str]) -> None:
    """Raise `RunFolderError` for a URL (gs://, s3://, ...) as a run folder.

    Checkpoints commit by renaming folders and the logs append to files, neither of which an
    object store does; `Path("gs://b/run")` would quietly write to a local `gs:/b/run`.
    """
    text = os.fspath(folder)
    if "://" in text:
        raise RunFolderError(
            f"{text}: the run folder (--out) must be a local path; dataset folders may be on "
            "gs:// or s3://, but checkpoints and logs are written locally. Train into a local "
            "folder and copy it up afterwards (`gcloud storage cp -r RUN gs://...`, "
            "`aws s3 sync RUN s3://...`), or mount the bucket (gcsfuse, mountpoint-s3)."
        )


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
