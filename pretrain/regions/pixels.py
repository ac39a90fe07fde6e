"""`pixels` regions (Pixel-BERT): the loader decodes and normalises the image; the model's own
trainable CNN (`pretrain.pixel_backbone`) turns it into visual tokens inside `forward`.

So `encode` returns `Regions` carrying `pixels` (B x 3 x H x W) and empty features: the
features exist only in the model, which computes them once per image per step and indexes them
for the ITM rows and the ITC pass. The source tells the trainer which backbone to build
(`model_config`), and MOC/MRFR do not apply (no object labels, no fixed features to regress).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pretrain.regions.base import Regions, RegionSource
from pretrain.shards import CorruptSampleError, RawSample

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PixelRegions(RegionSource):
    """Images resized to `image_size` squares and normalised with ImageNet's mean and std.

    `backbone` is the model's CNN spec (see `pretrain.pixel_backbone`); `sample` the number of
    feature-map cells kept per image in training (all at evaluation).
    """

    num_classes = 0

    def __init__(
        self,
        backbone: dict[str, Any] | None = None,
        *,
        image_size: int = 224,
        sample: int = 100,
    ) -> None:
        # Imported here: pretrain.pixel_backbone itself imports this package's grid boxes.
        from pretrain.pixel_backbone import backbone_out_dim, backbone_stride

        self.backbone = dict(backbone or {"type": "resnet", "width": 32, "depths": [1, 1, 1, 1]})
        self.image_size = image_size
        self.sample = sample
        self.feature_dim = backbone_out_dim(self.backbone)
        side = -(-image_size // backbone_stride(self.backbone))
        self.max_regions = side * side
        self._mean = np.array(IMAGENET_MEAN, np.float32)[:, None, None]
        self._std = np.array(IMAGENET_STD, np.float32)[:, None, None]

    def prepare(self, sample: RawSample) -> dict[str, Any]:
        try:
            image = Image.open(io.BytesIO(sample.image_bytes()))
            image.load()
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise CorruptSampleError(f"{sample.key}: undecodable image ({error})") from error
        size = (self.image_size, self.image_size)
        rgb = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        array = np.asarray(rgb, np.float32).transpose(2, 0, 1) / 255.0
        return {"pixels": torch.from_numpy((array - self._mean) / self._std)}

    def encode(self, inputs: dict[str, torch.Tensor], device: torch.device | str) -> Regions:
        pixels = inputs["pixels"].float().to(device, non_blocking=True)
        n = pixels.shape[0]
        return Regions(
            features=torch.zeros(n, 0, self.feature_dim, device=device),
            boxes=torch.zeros(n, 0, 5, device=device),
            mask=torch.zeros(n, 0, dtype=torch.bool, device=device),
            pixels=pixels,
        )

    def model_config(self) -> dict[str, Any]:
        return {"visual_backbone": self.backbone, "pixel_sample": self.sample}

    def spec(self) -> dict[str, Any]:
        return {
            "type": "pixels",
            "backbone": self.backbone,
            "image_size": self.image_size,
            "sample": self.sample,
            "feature_dim": self.feature_dim,
            "max_regions": self.max_regions,
        }
