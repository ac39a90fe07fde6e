"""Region masking for MOC and MRFR: 15% of regions; a masked region's feature is zeroed 90%."""

from __future__ import annotations

import torch


def mask_regions(
    features: torch.Tensor,
    valid: torch.Tensor,
    generator: torch.Generator,
    probability: float = 0.15,
    zero_fraction: float = 0.9,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked features, which regions were masked) for features N x R x F.

    At least one valid region per row is masked. The random draws are made on the CPU with
    `generator`, so a resumed run draws the same masks.
    """
    n, r = valid.shape
    draw = torch.rand((n, r), generator=generator)
    zero = torch.rand((n, r), generator=generator) < zero_fraction
    valid_cpu = valid.detach().cpu().bool()
    masked = (draw < probability) & valid_cpu
    # Guarantee one masked region per row: the valid region with the smallest draw.
    lowest = draw.masked_fill(~valid_cpu, 2.0).argmin(dim=1)
    masked[torch.arange(n), lowest] |= valid_cpu[torch.arange(n), lowest]
    masked = masked.to(features.device)
    zeroed = (masked & zero.to(features.device))[..., None]
    return features.masked_fill(zeroed, 0.0), masked
