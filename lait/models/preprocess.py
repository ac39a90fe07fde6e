"""A CLIP model's image preprocessing applied to a batch, at less cost than image by image.

open_clip's transform is a torchvision `Compose` of PIL steps (resize, crop, convert to RGB)
then `ToTensor` and `Normalize`. `BatchPreprocess` runs the PIL steps per image — in a thread
pool when one is given: Pillow releases the interpreter lock while it decodes and resamples,
so a pool uses every core where a loop uses one — and the tensor steps once on the stacked
batch. The result equals `torch.stack([preprocess(image) for image in images])` exactly
(`tests/test_clip_preprocess.py`); a transform of another shape is applied as it is.

The scorer hands it the stored image bytes, so decoding happens in the pool too.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import Compose, Normalize, ToTensor
from torchvision.transforms.functional import to_tensor

__all__ = ["BatchPreprocess"]


class BatchPreprocess:
    """`preprocess` (an open_clip image transform) over many images; see the module doc."""

    def __init__(self, preprocess: Callable[[Image.Image], torch.Tensor]) -> None:
        self.preprocess = preprocess
        self._pil_steps: list[Callable[[Any], Any]] | None = None
        self._normalize: Normalize | None = None
        steps = list(preprocess.transforms) if isinstance(preprocess, Compose) else []
        if (
            len(steps) >= 2
            and isinstance(steps[-2], ToTensor)
            and isinstance(steps[-1], Normalize)
            and not any(isinstance(step, ToTensor) for step in steps[:-2])
        ):
            self._pil_steps = steps[:-2]
            self._normalize = steps[-1]

    def __call__(self, images: Sequence[Image.Image], pool: Executor | None = None) -> torch.Tensor:
        """One [N, 3, H, W] float batch of `images` (any mode; converted to RGB first)."""
        return self._stack(_map(self._prepare, images, pool))

    def from_encoded(self, encoded: Sequence[bytes], pool: Executor | None = None) -> torch.Tensor:
        """`self(...)` of the images that `encoded` decode to (decoded in `pool` too)."""
        return self._stack(_map(self._prepare_encoded, encoded, pool))

    def _prepare_encoded(self, data: bytes) -> np.ndarray | torch.Tensor:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return self._prepare(image)

    def _prepare(self, image: Image.Image) -> np.ndarray | torch.Tensor:
        """The image after the PIL steps as (H, W, 3) uint8, or fully preprocessed where the
        transform is not of the split shape (or the steps do not end in RGB)."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        if self._pil_steps is None:
            return self.preprocess(rgb)
        for step in self._pil_steps:
            rgb = step(rgb)
        if not isinstance(rgb, Image.Image) or rgb.mode != "RGB":
            return self.preprocess(image.convert("RGB"))
        return np.asarray(rgb)

    def _stack(self, prepared: list[np.ndarray | torch.Tensor]) -> torch.Tensor:
        arrays = [p for p in prepared if isinstance(p, np.ndarray)]
        if (
            self._normalize is None
            or len(arrays) != len(prepared)
            or len({a.shape for a in arrays}) != 1
        ):
            return torch.stack([self._tail(p) for p in prepared])
        # ToTensor's arithmetic (uint8 -> float, / 255), then Normalize's, on the whole batch.
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        pixels = batch.to(dtype=torch.get_default_dtype()).div(255)
        return self._normalize(pixels)

    def _tail(self, prepared: np.ndarray | torch.Tensor) -> torch.Tensor:
        """One image's tensor steps (where the batch cannot be stacked as arrays)."""
        if isinstance(prepared, torch.Tensor):
            return prepared
        assert self._normalize is not None
        tensor: torch.Tensor = self._normalize(to_tensor(prepared))
        return tensor


def _map(
    function: Callable[[Any], np.ndarray | torch.Tensor],
    items: Sequence[Any],
    pool: Executor | None,
) -> list[np.ndarray | torch.Tensor]:
    if pool is None or len(items) < 2:
        return [function(item) for item in items]
    return list(pool.map(function, items))
