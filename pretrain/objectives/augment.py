"""Multimodal augmentation for the contrastive (ITC) views (Park & Han, CVPR 2023).

The ITC pass sees distorted views: caption tokens replaced by [MASK], and region features with
noise and dropped regions, or, for the `pixels` source, images randomly cropped and colour
jittered. ITM and MLM keep the plain inputs. All draws are on the CPU from the trainer's
checkpointed generator, so a resumed run draws the same views.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """The `augment:` section of a stage (all 0/1 = off).

    text_mask: fraction of caption tokens masked. region_noise: Gaussian noise, as a fraction of
    the features' standard deviation. region_dropout: fraction of regions zeroed. crop_scale:
    a random crop keeps at least this fraction of each side (pixels). color_jitter: brightness
    and contrast change up to this fraction (pixels).
    """

    text_mask: float = 0.0
    region_noise: float = 0.0
    region_dropout: float = 0.0
    crop_scale: float = 1.0
    color_jitter: float = 0.0

    def __post_init__(self) -> None:
        for name in ("text_mask", "region_dropout", "color_jitter"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"augment.{name} is in [0, 1), not {getattr(self, name)}")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(f"augment.crop_scale is in (0, 1], not {self.crop_scale}")

    @property
    def enabled(self) -> bool:
        return bool(
            self.text_mask
            or self.region_noise
            or self.region_dropout
            or self.crop_scale < 1.0
            or self.color_jitter
        )


def mask_text(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mask_token_id: int,
    probability: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """A copy of `input_ids` (N x L, `[CLS] ... [SEP] pad`) with words replaced by [MASK]."""
    if probability <= 0:
        return input_ids
    real = attention_mask.detach().cpu().bool()
    inner = real.clone()
    inner[:, 0] = False  # [CLS]
    inner[torch.arange(real.shape[0]), real.sum(1) - 1] = False  # [SEP]
    chosen = (torch.rand(real.shape, generator=generator) < probability) & inner
    return input_ids.masked_fill(chosen.to(input_ids.device), mask_token_id)


def distort_regions(
    features: torch.Tensor,
    region_mask: torch.Tensor,
    noise: float,
    dropout: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Region features (N x R x F) with Gaussian noise and a fraction of regions zeroed (at
    least one real region per row is kept)."""
    out = features
    if noise > 0:
        std = features.detach().float().std().clamp(min=1e-6)
        draw = torch.randn(features.shape, generator=generator).to(features.device)
        out = out + noise * std * draw.to(features.dtype)
    if dropout > 0:
        valid = region_mask.detach().cpu().bool()
        draw = torch.rand(valid.shape, generator=generator)
        dropped = (draw < dropout) & valid
        keep = draw.masked_fill(~valid, 2.0).argmax(dim=1)  # the valid region drawn highest
        dropped[torch.arange(valid.shape[0]), keep] = False
        out = out.masked_fill(dropped.to(features.device)[..., None], 0.0)
    return out


def distort_pixels(
    pixels: torch.Tensor, crop_scale: float, jitter: float, generator: torch.Generator
) -> torch.Tensor:
    """Normalised images (B x 3 x H x W) randomly cropped (resized back) and colour jittered."""
    n = pixels.shape[0]
    out = pixels
    if crop_scale < 1.0:
        side = crop_scale + (1 - crop_scale) * torch.rand(n, generator=generator)
        shift = (1 - side)[:, None] * (2 * torch.rand(n, 2, generator=generator) - 1)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = side
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta.to(pixels), list(pixels.shape), align_corners=False)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if jitter > 0:
        brightness = jitter * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)
        contrast = 1 + jitter * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * contrast.to(out) + mean + brightness.to(out)
    return out
