"""The region-source interface: where a sample's regions (features, boxes, classes) come from.

A source works in two halves so that the expensive part can run where it is cheapest:
`prepare` runs in the data-loader workers on one sample (decode an image, read an `.npz`),
`collate` stacks prepared samples, and `encode` runs in the trainer on a batch (e.g. a frozen
CLIP visual tower on the accelerator) and returns `Regions`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from pretrain.shards import RawSample


@dataclass
class Regions:
    """A batch's regions: features B x R x F, boxes B x R x 5 (x1, y1, x2, y2, area in 0..1),
    mask B x R (True = a real region), and optionally class probabilities B x R x C.

    The `pixels` source gives `pixels` (B x 3 x H x W) instead and R = 0: its features come
    from the model's own backbone (`ImageBertModel.pixel_regions`)."""

    features: torch.Tensor
    boxes: torch.Tensor
    mask: torch.Tensor
    class_probs: torch.Tensor | None = None
    pixels: torch.Tensor | None = None

    def labels(self) -> torch.Tensor | None:
        return None if self.class_probs is None else self.class_probs.argmax(-1)

    def index(self, rows: torch.Tensor) -> Regions:
        """The regions of the given images, in that order (for pairing images with captions)."""
        return Regions(
            self.features[rows],
            self.boxes[rows],
            self.mask[rows],
            None if self.class_probs is None else self.class_probs[rows],
            None if self.pixels is None else self.pixels[rows],
        )


class RegionSource(ABC):
    """Turns samples into regions. Subclasses set feature_dim, num_classes and max_regions."""

    feature_dim: int
    num_classes: int
    max_regions: int
    #: A folder beside the shards whose same-named tars add members (e.g. `regions`), or None.
    sidecar_dir: str | None = None

    @abstractmethod
    def prepare(self, sample: RawSample) -> dict[str, Any]:
        """Loader-side work on one sample; raise CorruptSampleError for unusable input."""

    def collate(self, prepared: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Stack prepared samples (all values are tensors of equal shape by default)."""
        return {k: torch.stack([torch.as_tensor(p[k]) for p in prepared]) for k in prepared[0]}

    @abstractmethod
    def encode(self, inputs: dict[str, torch.Tensor], device: torch.device | str) -> Regions:
        """Trainer-side work on a collated batch: the regions, on `device`."""

    def model_config(self) -> dict[str, Any]:
        """`ImageBertConfig` fields the model needs for this source (a trainable backbone)."""
        return {}

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """What produced these regions (recorded in checkpoints and eval results)."""


def grid_boxes(rows: int, cols: int) -> torch.Tensor:
    """The (rows*cols) x 5 boxes of a patch grid, row-major, normalised to the image."""
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    x1, y1 = xs.flatten() / cols, ys.flatten() / rows
    x2, y2 = (xs.flatten() + 1) / cols, (ys.flatten() + 1) / rows
    area = torch.full_like(x1, 1.0 / (rows * cols))
    return torch.stack([x1, y1, x2, y2, area], dim=1).float()
