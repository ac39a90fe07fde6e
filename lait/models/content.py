"""Content heads: small classifiers over a CLIP model's image embedding (non-natural images,
unsafe images, watermarks), as LAION's CLIP-based NSFW and watermark detectors are.

A head is a linear layer or a small MLP (ReLU between layers, a sigmoid at the end) that
reads the L2-normalised image embedding CLIP scoring already computed, so a head costs a
matrix product per batch, not a second pass of an image model. It belongs to one CLIP model:
the file says which (`clip_model`) and how wide its input is (`embed_dim`), and loading it
for another model is an error.

    head = load_content_head("lait-demo-watermark")          # shipped, for lait-demo-clip
    head = load_content_head("/models/nsfw-vit-b-32.safetensors")
    probabilities = head.probabilities(image_embeddings)     # [n] in [0, 1]

File format: safetensors with tensors `layers.{i}.weight` ([out, in]) and `layers.{i}.bias`
([out]) for i = 0..k-1, the last with one output; metadata `signal`, `clip_model`,
`embed_dim` and an optional `threshold` (a suggestion recorded by whoever trained it; the
pipeline's threshold comes from its config). `save_content_head` writes one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lait.models.clip import WEIGHTS_DIR

SIGNALS: tuple[str, ...] = ("nonnatural", "unsafe", "watermark")
# Heads LAIT ships, by name: trained on demo-web images for the demo CLIP only
# (scripts/train_content_heads.py); a real crawl names its own heads by path.
DEMO_HEADS: dict[str, str] = {
    "lait-demo-nonnatural": "nonnatural",
    "lait-demo-watermark": "watermark",
}


class ContentHeadError(ValueError):
    """A content head cannot be loaded or does not fit the CLIP model; the message says why."""


@dataclasses.dataclass(frozen=True)
class ContentHead:
    """A loaded head: Linear layers (weight [out, in], bias [out]) with ReLU between."""

    name: str
    signal: str
    clip_model: str
    embed_dim: int
    weights: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    suggested_threshold: float | None = None

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Raw scores of [n, embed_dim] embeddings (L2-normalised, as CLIP scoring gives)."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embed_dim:
            raise ContentHeadError(
                f"content head {self.name} reads {self.embed_dim}-d embeddings of "
                f"{self.clip_model}, got shape {tuple(embeddings.shape)}"
            )
        x = embeddings.float()
        for i, (weight, bias) in enumerate(self.weights):
            x = x @ weight.T + bias
            if i < len(self.weights) - 1:
                x = torch.relu(x)
        return x[:, 0]

    def probabilities(self, embeddings: torch.Tensor) -> torch.Tensor:
        """P(signal) per embedding, float32 in [0, 1]."""
        with torch.inference_mode():
            return torch.sigmoid(self.logits(embeddings.cpu()))

    def check_model(self, clip_model: str) -> None:
        """Raise `ContentHeadError` unless this head was trained on `clip_model`'s embedding."""
        if clip_model != self.clip_model:
            raise ContentHeadError(
                f"content head {self.name} ({self.signal}) was trained on the image embedding "
                f"of {self.clip_model!r}, but CLIP scoring uses {clip_model!r}: embeddings of "
                "different models are not comparable; give a head trained for this model"
            )


def head_path(name_or_path: str) -> Path:
    """The file of a shipped head name, or `name_or_path` itself."""
    if name_or_path in DEMO_HEADS:
        return WEIGHTS_DIR / f"{name_or_path}.safetensors"
    return Path(name_or_path)


def read_head_metadata(name_or_path: str) -> dict[str, str]:
    """The head file's metadata (signal, clip_model, embed_dim, ...) without its weights."""
    path = head_path(name_or_path)
    if not path.is_file():
        shipped = ", ".join(sorted(DEMO_HEADS))
        raise ContentHeadError(
            f"content head {name_or_path!r} not found: give a safetensors file path "
            f"(see lait.models.content) or a shipped name ({shipped})"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
    except Exception as error:  # safetensors raises its own SafetensorError on bad files
        raise ContentHeadError(f"content head {path} is not a safetensors file: {error}") from error
    missing = {"signal", "clip_model", "embed_dim"} - set(metadata)
    if missing:
        raise ContentHeadError(f"content head {path} lacks metadata {sorted(missing)}")
    return metadata


def load_content_head(name_or_path: str) -> ContentHead:
    """Load a head by shipped name or file path (on the CPU)."""
    metadata = read_head_metadata(name_or_path)
    path = head_path(name_or_path)
    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    layers = []
    for i in range(len(tensors) // 2):
        weight, bias = tensors.get(f"layers.{i}.weight"), tensors.get(f"layers.{i}.bias")
        if weight is None or bias is None:
            raise ContentHeadError(f"content head {path}: missing layers.{i}.weight/bias")
        layers.append((weight.float(), bias.float()))
    embed_dim = int(metadata["embed_dim"])
    if not layers or layers[0][0].shape[1] != embed_dim or layers[-1][0].shape[0] != 1:
        raise ContentHeadError(
            f"content head {path}: layers must read {embed_dim} inputs and end in one output"
        )
    threshold = metadata.get("threshold")
    return ContentHead(
        name=name_or_path,
        signal=metadata["signal"],
        clip_model=metadata["clip_model"],
        embed_dim=embed_dim,
        weights=tuple(layers),
        suggested_threshold=float(threshold) if threshold else None,
    )


def save_content_head(
    path: str | Path,
    layers: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    signal: str,
    clip_model: str,
    threshold: float | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a head (Linear layers as (weight [out, in], bias [out])) in the format above."""
    if signal not in SIGNALS:
        raise ValueError(f"signal {signal!r} is not one of {SIGNALS}")
    state = {}
    for i, (weight, bias) in enumerate(layers):
        state[f"layers.{i}.weight"] = weight.detach().float().contiguous().cpu()
        state[f"layers.{i}.bias"] = bias.detach().float().contiguous().cpu()
    metadata = {
        "signal": signal,
        "clip_model": clip_model,
        "embed_dim": str(int(layers[0][0].shape[1])),
    }
    if threshold is not None:
        metadata["threshold"] = repr(float(threshold))
    if extra:
        metadata["training"] = json.dumps(extra, sort_keys=True)
    save_file(state, str(path), metadata=metadata)
