"""`precomputed` regions: bottom-up-attention style `.npz` per sample, as UNITER/ImageBERT used.

The `.npz` is a member of the sample (`KEY.npz`) in its shard or in a sidecar shard
(`DATASET/regions/00003.tar`, as `lait featurize` writes). Recognised arrays:
`features` (R x F), `boxes` (R x 4 or R x 5; pixels or 0..1), optional `class_probs` (R x C),
optional `image_w`/`image_h`. Names used by bottom-up-attention dumps (`x`, `bbox`, `norm_bb`,
`cls_prob`, `soft_labels`) are accepted too. At most `max_regions` regions are kept.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
import torch

from pretrain.regions.base import Regions, RegionSource
from pretrain.shards import CorruptSampleError, RawSample, metadata

_FEATURES = ("features", "x")
_BOXES = ("boxes", "norm_bb", "bbox")
_PROBS = ("class_probs", "cls_prob", "soft_labels")


def _first(arrays: Any, names: tuple[str, ...]) -> np.ndarray | None:
    for name in names:
        if name in arrays:
            return np.asarray(arrays[name])
    return None


def normalise_boxes(boxes: np.ndarray, width: float | None, height: float | None) -> np.ndarray:
    """R x 5 boxes (x1, y1, x2, y2, area) in 0..1 from R x 4 or R x 5 boxes."""
    xyxy = boxes[:, :4].astype(np.float32)
    if xyxy.size and xyxy.max() > 1.5:
        if not width or not height:
            raise CorruptSampleError("boxes are in pixels but the image size is unknown")
        scale = np.array([width, height, width, height], dtype=np.float32)
        xyxy = (xyxy / scale).astype(np.float32)
    xyxy = np.clip(xyxy, 0.0, 1.0)
    area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    return np.concatenate([xyxy, area[:, None]], axis=1)


class PrecomputedRegions(RegionSource):
    """Regions read from each sample's `.npz`."""

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        *,
        max_regions: int = 100,
        member: str = "npz",
        sidecar_dir: str | None = "regions",
    ) -> None:
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.max_regions = max_regions
        self.member = member
        self.sidecar_dir = sidecar_dir

    def prepare(self, sample: RawSample) -> dict[str, Any]:
        data = sample.files.get(self.member)
        if data is None:
            raise CorruptSampleError(
                f"{sample.key} has no .{self.member} regions; run `lait featurize` on the folder"
            )
        try:
            arrays = dict(np.load(io.BytesIO(data), allow_pickle=False))
        except (ValueError, OSError, zipfile.BadZipFile) as error:
            raise CorruptSampleError(
                f"{sample.key}: unreadable .{self.member} ({error})"
            ) from error
        features, boxes = _first(arrays, _FEATURES), _first(arrays, _BOXES)
        if features is None or boxes is None or len(features) != len(boxes):
            raise CorruptSampleError(f"{sample.key}: .{self.member} lacks matching features/boxes")
        if features.shape[1] != self.feature_dim:
            raise CorruptSampleError(
                f"{sample.key}: features are {features.shape[1]}-d, the source expects "
                f"{self.feature_dim}"
            )
        meta = metadata(sample)
        width = float(arrays.get("image_w", meta.get("width", 0)) or 0)
        height = float(arrays.get("image_h", meta.get("height", 0)) or 0)
        r = min(len(features), self.max_regions)
        out_features = np.zeros((self.max_regions, self.feature_dim), np.float32)
        out_boxes = np.zeros((self.max_regions, 5), np.float32)
        valid = np.zeros(self.max_regions, bool)
        out_features[:r] = features[:r]
        out_boxes[:r] = normalise_boxes(boxes[:r], width, height)
        valid[:r] = True
        prepared: dict[str, Any] = {
            "features": out_features,
            "boxes": out_boxes,
            "mask": valid,
        }
        probs = _first(arrays, _PROBS)
        if self.num_classes:
            out_probs = np.zeros((self.max_regions, self.num_classes), np.float32)
            # Without class probabilities a sample's regions have no MOC label (all zeros,
            # skipped by MOC), not class 0 for all: that would teach MOC a constant.
            if probs is not None:
                out_probs[:r] = probs[:r, : self.num_classes]
            prepared["class_probs"] = out_probs
        return prepared

    def encode(self, inputs: dict[str, torch.Tensor], device: torch.device | str) -> Regions:
        probs = inputs.get("class_probs")
        return Regions(
            features=inputs["features"].float().to(device),
            boxes=inputs["boxes"].float().to(device),
            mask=inputs["mask"].bool().to(device),
            class_probs=None if probs is None else probs.float().to(device),
        )

    def spec(self) -> dict[str, Any]:
        return {
            "type": "precomputed",
            "feature_dim": self.feature_dim,
            "num_classes": self.num_classes,
            "max_regions": self.max_regions,
            "member": self.member,
            "sidecar_dir": self.sidecar_dir,
        }
