"""Load a CLIP model by open_clip name + pretrained tag, by checkpoint path, or the built-in
offline demo model, and embed images and texts with it.

    clip = load_clip()                                   # "lait-demo-clip", shipped weights
    clip = load_clip("ViT-B-32", "laion2b_s34b_b79k")    # open_clip's own loading (hub tag)
    clip = load_clip("ViT-B-32", "/models/vit-b-32.pt")  # a local checkpoint
    scores = (encode_images(clip, images) * encode_texts(clip, captions)).sum(-1)

"lait-demo-clip" is a small open_clip ViT (128 px input, 16 px patches: an 8 x 8 token grid)
and text transformer, trained by `scripts/train_demo_clip.py` on rendered demo-web scenes.
It knows the demo web's world (coloured shapes and where they are, charts and banners,
watermarks) and nothing else: use a real model on real data.
Its weights ship in `lait/models/weights/`; the token embedding is stored sparsely (only
rows of tokens seen in training; every other row is zero, as it was during training), which
keeps the file a few MB instead of 25.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import open_clip
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from lait.models.preprocess import BatchPreprocess

DEMO_MODEL = "lait-demo-clip"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEMO_CONFIG_PATH = WEIGHTS_DIR / f"{DEMO_MODEL}.json"
DEMO_WEIGHTS_PATH = WEIGHTS_DIR / f"{DEMO_MODEL}.safetensors"
# Inference preprocessing of the demo model: squash (no crop), so no object leaves the frame.
DEMO_PREPROCESS: dict[str, Any] = {"resize_mode": "squash", "interpolation": "bicubic"}

_TOKEN_IDS = "lait.token_embedding.ids"
_TOKEN_ROWS = "lait.token_embedding.rows"
_TOKEN_EMBEDDING = "token_embedding.weight"


class ClipLoadError(RuntimeError):
    """A CLIP model could not be loaded; the message says what to give instead."""


@dataclasses.dataclass
class LoadedClip:
    """A CLIP model ready for inference (eval mode), with its preprocessing and tokenizer."""

    model: torch.nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[..., torch.Tensor]
    name: str
    embed_dim: int
    device: torch.device


def register_demo_config() -> None:
    """Make "lait-demo-clip" an open_clip model name (idempotent)."""
    if DEMO_MODEL not in open_clip.list_models():
        open_clip.add_model_config(DEMO_CONFIG_PATH)


def demo_model_config() -> dict[str, Any]:
    """The demo model's open_clip architecture config (embed_dim, vision_cfg, text_cfg)."""
    config: dict[str, Any] = json.loads(DEMO_CONFIG_PATH.read_text())
    return config


def save_demo_weights(model: torch.nn.Module, path: str | Path = DEMO_WEIGHTS_PATH) -> None:
    """Save `model`'s state dict as safetensors, the token embedding sparsely (nonzero rows)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    embedding = state.pop(_TOKEN_EMBEDDING)
    ids = torch.nonzero(embedding.abs().sum(dim=1) > 0).flatten()
    state[_TOKEN_IDS] = ids.to(torch.int64)
    state[_TOKEN_ROWS] = embedding[ids].contiguous()
    save_file(state, str(path), metadata={"format": "pt", "model": DEMO_MODEL})


def load_demo_weights(model: torch.nn.Module, path: str | Path = DEMO_WEIGHTS_PATH) -> None:
    """Load weights saved by `save_demo_weights` into `model` (strict)."""
    state = load_file(str(path))
    ids, rows = state.pop(_TOKEN_IDS), state.pop(_TOKEN_ROWS)
    vocab_size, width = model.state_dict()[_TOKEN_EMBEDDING].shape
    embedding = torch.zeros(vocab_size, width, dtype=rows.dtype)
    embedding[ids] = rows
    state[_TOKEN_EMBEDDING] = embedding
    model.load_state_dict(state, strict=True)


@contextlib.contextmanager
def _quiet_root_warnings() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def load_clip(
    model: str = DEMO_MODEL,
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
    *,
    weights: bool = True,
) -> LoadedClip:
    """Load a CLIP model for inference.

    `model` is "lait-demo-clip" (the built-in offline demo model; `pretrained` may then be
    a checkpoint of the same architecture, e.g. one retrained by `scripts/train_demo_clip.py`)
    or any open_clip model name, including "hf-hub:org/repo" and "local-dir:/path". For an
    open_clip name, `pretrained` is a pretrained tag (downloaded by open_clip; fails fast when
    offline) or a local checkpoint path. `weights=False` builds the architecture with random
    weights (training from scratch); otherwise a model without weights is an error, since
    scoring with a random model would silently keep noise.
    """
    torch_device = torch.device(device)
    if model == DEMO_MODEL:
        register_demo_config()
        # open_clip warns "No pretrained weights loaded ... initialized randomly" when it
        # builds the architecture; our weights are loaded right after, so that would mislead.
        with _quiet_root_warnings():
            net, _, preprocess = open_clip.create_model_and_transforms(
                DEMO_MODEL, pretrained=None, device="cpu", image_resize_mode="squash"
            )
        if weights:
            path = Path(pretrained) if pretrained is not None else DEMO_WEIGHTS_PATH
            if not path.is_file():
                raise ClipLoadError(
                    f"demo CLIP weights not found at {path}; reinstall LAIT or rebuild them "
                    "with `python scripts/train_demo_clip.py`"
                )
            load_demo_weights(net, path)
    else:
        net, preprocess = _load_open_clip(model, pretrained, weights)
    net = net.to(torch_device).eval()
    tokenizer = open_clip.get_tokenizer(DEMO_MODEL if model == DEMO_MODEL else model)
    embed_dim = int(net.text_projection.shape[1]) if hasattr(net, "text_projection") else -1
    if embed_dim < 0:
        embed_dim = int(getattr(net, "embed_dim", 0) or _probe_embed_dim(net, tokenizer))
    return LoadedClip(
        model=net,
        preprocess=preprocess,
        tokenizer=tokenizer,
        name=model if pretrained is None else f"{model}:{pretrained}",
        embed_dim=embed_dim,
        device=torch_device,
    )


def _load_open_clip(
    model: str, pretrained: str | None, weights: bool
) -> tuple[torch.nn.Module, Callable[[Image.Image], torch.Tensor]]:
    has_schema = model.startswith(("hf-hub:", "local-dir:"))
    if weights and pretrained is None and not has_schema:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ClipLoadError(
            f"open_clip model {model!r} needs pretrained weights: a tag "
            f"({', '.join(tags) or 'none'}) or a local checkpoint path; "
            "scoring with random weights keeps noise"
        )
    try:
        net, _, preprocess = open_clip.create_model_and_transforms(
            model, pretrained=pretrained if weights else None, device="cpu"
        )
    except Exception as error:  # open_clip raises bare RuntimeError/ValueError/OSError
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = (
            " HF_HUB_OFFLINE is set, so nothing is downloaded: give a local checkpoint path, "
            "or unset HF_HUB_OFFLINE to let open_clip fetch the tag."
            if offline
            else ""
        )
        raise ClipLoadError(
            f"cannot load open_clip model {model!r} (pretrained={pretrained!r}): {error}.{hint}"
        ) from error
    return net, preprocess


def _probe_embed_dim(net: torch.nn.Module, tokenizer: Callable[..., torch.Tensor]) -> int:
    with torch.inference_mode():
        return int(net.encode_text(tokenizer(["a"])).shape[-1])  # type: ignore[operator]


def preprocess_images(
    clip: LoadedClip, images: Sequence[Image.Image], pool: Executor | None = None
) -> torch.Tensor:
    """Images as one preprocessed batch tensor (RGB, resized, normalised), each image's PIL
    steps in `pool`'s threads when given (`lait.models.preprocess`)."""
    return BatchPreprocess(clip.preprocess)(images, pool)


def preprocess_encoded(
    clip: LoadedClip, encoded: Sequence[bytes], pool: Executor | None = None
) -> torch.Tensor:
    """`preprocess_images` of the images that `encoded` decode to, decoded in `pool` too."""
    return BatchPreprocess(clip.preprocess).from_encoded(encoded, pool)


def encode_image_batch(clip: LoadedClip, pixels: torch.Tensor) -> torch.Tensor:
    """L2-normalised embeddings of a preprocessed batch (float32, on the CPU)."""
    with torch.inference_mode():
        features = clip.model.encode_image(pixels.to(clip.device))  # type: ignore[operator]
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()


def encode_images(
    clip: LoadedClip, images: Sequence[Image.Image], batch_size: int = 256
) -> torch.Tensor:
    """L2-normalised image embeddings, [len(images), embed_dim], float32 on the CPU."""
    if not images:
        return torch.zeros(0, clip.embed_dim)
    parts = [
        encode_image_batch(clip, preprocess_images(clip, images[i : i + batch_size]))
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(parts)


def encode_texts(clip: LoadedClip, texts: Sequence[str], batch_size: int = 1024) -> torch.Tensor:
    """L2-normalised text embeddings, [len(texts), embed_dim], float32 on the CPU."""
    if not texts:
        return torch.zeros(0, clip.embed_dim)
    parts = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            tokens = clip.tokenizer(list(texts[i : i + batch_size])).to(clip.device)
            features = clip.model.encode_text(tokens)  # type: ignore[operator]
            parts.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
    return torch.cat(parts)
