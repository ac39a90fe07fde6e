"""Region features behind one interface: `clip-grid` (default), `precomputed` and `pixels`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pretrain.regions.base import Regions, RegionSource, grid_boxes
from pretrain.regions.clip_grid import ClipGridRegions
from pretrain.regions.pixels import PixelRegions
from pretrain.regions.precomputed import PrecomputedRegions
from pretrain.regions.vocabulary import DEFAULT_VOCABULARY


@dataclass(frozen=True)
class RegionsConfig:
    """Which region source a plan uses.

    clip-grid: `model` (an open_clip name, tag or local path the shared loader understands)
    and `pretrained`; `vocabulary` for MOC labels. precomputed: `feature_dim`, `num_classes`,
    `max_regions`, `member`, `sidecar_dir`. pixels (Pixel-BERT): `backbone` (the model's CNN:
    `{type: resnet, width, depths}` or `{type: resnet18|resnet50, weights: LOCAL_PATH}`),
    `image_size`, `sample` (cells kept per image in training).
    """

    type: str = "clip-grid"
    model: str = "lait-demo-clip"
    pretrained: str | None = None
    vocabulary: tuple[str, ...] = DEFAULT_VOCABULARY
    prompt: str = "a photo of a {}."
    pool: int = 1
    features: str = "tokens"  # clip-grid: "tokens" (tower width) or "projected" (joint space)
    global_region: bool = False  # clip-grid: the whole image as an extra first region
    feature_dim: int = 2048
    num_classes: int = 1601
    max_regions: int = 100
    member: str = "npz"
    sidecar_dir: str | None = "regions"
    backbone: dict[str, Any] = field(
        default_factory=lambda: {"type": "resnet", "width": 32, "depths": [1, 1, 1, 1]}
    )
    image_size: int = 224
    sample: int = 100
    extra: dict[str, Any] = field(default_factory=dict)


class RegionSourceError(ValueError):
    """A region source cannot be built from the plan's `regions` section."""


def build_region_source(config: RegionsConfig, device: str = "cpu") -> RegionSource:
    """The region source a plan names. clip-grid loads its model with the shared CLIP loader."""
    if config.type == "clip-grid":
        try:
            from lait.models.clip import load_clip
        except ImportError as error:
            raise RegionSourceError(
                "clip-grid regions need lait.models.clip (the CLIP loader shared with the "
                "pipeline); install the full project or use `regions: {type: precomputed}`"
            ) from error
        clip = load_clip(config.model, config.pretrained, device=device)
        return ClipGridRegions(
            clip.model,
            clip.preprocess,
            clip.tokenizer,
            vocabulary=config.vocabulary,
            prompt=config.prompt,
            name=clip.name,
            pool=config.pool,
            features=config.features,
            global_region=config.global_region,
            device=device,
        )
    if config.type == "precomputed":
        return PrecomputedRegions(
            config.feature_dim,
            config.num_classes,
            max_regions=config.max_regions,
            member=config.member,
            sidecar_dir=config.sidecar_dir,
        )
    if config.type == "pixels":
        from pretrain.pixel_backbone import BackboneError

        try:
            return PixelRegions(config.backbone, image_size=config.image_size, sample=config.sample)
        except BackboneError as error:
            raise RegionSourceError(f"regions.backbone: {error}") from error
    raise RegionSourceError(
        f"unknown region source {config.type!r}; use 'clip-grid', 'precomputed' or 'pixels'"
    )


__all__ = [
    "DEFAULT_VOCABULARY",
    "ClipGridRegions",
    "PixelRegions",
    "PrecomputedRegions",
    "RegionSource",
    "RegionSourceError",
    "Regions",
    "RegionsConfig",
    "build_region_source",
    "grid_boxes",
]
