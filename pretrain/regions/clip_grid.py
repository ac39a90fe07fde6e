"""`clip-grid` regions: the patch tokens of a frozen open_clip visual tower.

Each patch of the grid is a region: its feature is the tower's output token there, its box the
patch's cell. Its MOC label comes from zero-shot classification: the patch token, projected into
CLIP's joint space, against the text embeddings of an object vocabulary ("a photo of a {}.").
The full class distribution is kept for MOC's KL variant.

ViT towers give patch tokens with `output_tokens=True`; ModifiedResNet towers give the last
feature map, projected per position through the attention pool's value and output projections.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn

from pretrain.regions.base import Regions, RegionSource, grid_boxes
from pretrain.regions.vocabulary import DEFAULT_VOCABULARY
from pretrain.shards import CorruptSampleError, RawSample

DEFAULT_PROMPT = "a photo of a {}."


class ClipGridRegions(RegionSource):
    """Regions from a frozen open_clip model (`model`, its image `preprocess`, its `tokenizer`)."""

    def __init__(
        self,
        model: nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        *,
        vocabulary: Sequence[str] = DEFAULT_VOCABULARY,
        prompt: str = DEFAULT_PROMPT,
        temperature: float = 100.0,
        name: str = "custom",
        pool: int = 1,
        features: str = "tokens",
        global_region: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        if features not in ("tokens", "projected"):
            raise ValueError(f"features is 'tokens' or 'projected', not {features!r}")
        self.model = model.eval().requires_grad_(False).to(device)
        self.preprocess = preprocess
        self.vocabulary = list(vocabulary)
        self.prompt = prompt
        self.temperature = temperature
        self.name = name
        self.pool = pool
        self.features = features
        self.global_region = global_region
        self.device = torch.device(device)
        with torch.no_grad():
            prompts = tokenizer([prompt.format(word) for word in self.vocabulary]).to(self.device)
            encode_text = getattr(model, "encode_text")  # noqa: B009 (open_clip API)
            self.class_embeddings = F.normalize(encode_text(prompts).float(), dim=-1)
            size = _image_size(model)
            self._pooled_grid: tuple[int, int] = (0, 0)
            self._size = size
            tokens, _, _ = self._patch_tokens(torch.zeros(1, 3, *size, device=self.device))
        self.feature_dim = tokens.shape[-1]
        self.max_regions = tokens.shape[1] + int(global_region)
        self.num_classes = len(self.vocabulary)
        self._grid = self._pooled_grid
        self._boxes = grid_boxes(*self._grid)
        if global_region:
            whole = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0]])
            self._boxes = torch.cat([whole, self._boxes])

    def prepare(self, sample: RawSample) -> dict[str, Any]:
        try:
            image = Image.open(io.BytesIO(sample.image_bytes()))
            image.load()
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise CorruptSampleError(f"{sample.key}: undecodable image ({error})") from error
        return {"pixels": self.preprocess(image.convert("RGB"))}

    @torch.no_grad()
    def encode(self, inputs: dict[str, torch.Tensor], device: torch.device | str) -> Regions:
        pixels = inputs["pixels"].to(self.device, non_blocking=True)
        tokens, projected, pooled = self._patch_tokens(pixels)
        if self.global_region:
            # The whole image as region 0: CLIP's pooled embedding (or the patches' mean).
            whole = pooled if self.features == "projected" else tokens.mean(1)
            tokens = torch.cat([whole[:, None], tokens], dim=1)
            projected = torch.cat([pooled[:, None], projected], dim=1)
        if self.features == "projected":
            tokens = projected
        logits = self.temperature * F.normalize(projected.float(), dim=-1) @ self.class_embeddings.T
        n = tokens.shape[0]
        return Regions(
            features=tokens.float().to(device),
            boxes=self._boxes.to(device).expand(n, -1, -1),
            mask=torch.ones(tokens.shape[:2], dtype=torch.bool, device=device),
            class_probs=logits.softmax(-1).to(device),
        )

    def _patch_tokens(
        self, pixels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(patch tokens B x P x W, the same projected into the joint space B x P x D, the
        pooled image embedding B x D); patches average-pooled over `pool` x `pool` cells
        (fewer, larger regions: a shorter sequence). With features="projected" the region
        features are the joint-space ones."""
        tokens, projected, image = self._raw_patch_tokens(pixels)
        rows, cols = _grid_shape(tokens.shape[1], self._size)
        if self.pool > 1:
            pooled = []
            for x in (tokens, projected):
                grid = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], rows, cols)
                grid = F.avg_pool2d(grid, self.pool, ceil_mode=True)
                pooled.append(grid.flatten(2).transpose(1, 2))
            tokens, projected = pooled
            rows, cols = -(-rows // self.pool), -(-cols // self.pool)
        self._pooled_grid = (rows, cols)
        if self.features == "projected":
            tokens = projected
        return tokens, projected, image

    def _raw_patch_tokens(
        self, pixels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        visual: Any = getattr(self.model, "visual")  # noqa: B009 (open_clip API)
        if hasattr(visual, "output_tokens") and hasattr(visual, "transformer"):  # ViT
            previous = visual.output_tokens
            visual.output_tokens = True
            try:
                image, tokens = visual(pixels)
            finally:
                visual.output_tokens = previous
            projected = tokens @ visual.proj if visual.proj is not None else tokens
            return tokens, projected, image
        if hasattr(visual, "attnpool") and hasattr(visual, "layer4"):  # ModifiedResNet
            out = visual.forward_intermediates(pixels, indices=1)
            fmap = out["image_intermediates"][-1]  # B x C x h x w
            tokens = fmap.flatten(2).transpose(1, 2)
            pool = visual.attnpool
            projected = pool.c_proj(pool.v_proj(tokens))
            return tokens, projected, out["image_features"]
        raise TypeError(
            f"clip-grid supports open_clip ViT and ModifiedResNet towers, not "
            f"{type(visual).__name__}; use a ViT-* or RN* model"
        )

    def spec(self) -> dict[str, Any]:
        return {
            "type": "clip-grid",
            "model": self.name,
            "grid": list(self._grid),
            "pool": self.pool,
            "features": self.features,
            "global_region": self.global_region,
            "feature_dim": self.feature_dim,
            "vocabulary": self.vocabulary,
            "prompt": self.prompt,
        }


def _image_size(model: nn.Module) -> tuple[int, int]:
    size = getattr(getattr(model, "visual", None), "image_size", 224)
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


def _grid_shape(patches: int, image_size: tuple[int, int]) -> tuple[int, int]:
    """rows x cols of a patch grid with `patches` cells and the image's aspect ratio."""
    ratio = image_size[0] / image_size[1]
    rows = max(1, round((patches * ratio) ** 0.5))
    while patches % rows:
        rows -= 1
    return rows, patches // rows
