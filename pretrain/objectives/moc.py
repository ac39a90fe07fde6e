"""Masked object classification: predict a masked region's object class.

The label is the region source's class (for clip-grid: zero-shot classification of the patch
against an object vocabulary). `variant="ce"` trains on the arg-max label; `"kl"` matches the
whole class distribution (ImageBERT's MOC with KL).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def loss(
    logits: torch.Tensor,
    labels: torch.Tensor | None,
    probs: torch.Tensor | None,
    variant: str = "ce",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The MOC loss over masked regions (logits already gathered there), and accuracy."""
    if logits.shape[0] == 0:
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    if labels is None:
        assert probs is not None, "MOC needs region labels or class probabilities"
        labels = probs.argmax(-1)
    accuracy = (logits.argmax(-1) == labels).float().mean().detach()
    if variant == "kl":
        if probs is None:
            raise ValueError("moc variant 'kl' needs the region source's class distribution")
        value = F.kl_div(F.log_softmax(logits.float(), -1), probs.float(), reduction="batchmean")
    elif variant == "ce":
        value = F.cross_entropy(logits.float(), labels)
    else:
        raise ValueError(f"unknown moc variant {variant!r}; use 'ce' or 'kl'")
    return value, accuracy
