"""Masked region feature regression: regress a masked region's input feature (L2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between predicted and original features of the masked regions."""
    if predicted.shape[0] == 0:
        return predicted.sum() * 0.0
    return F.mse_loss(predicted.float(), target.float())
