"""Image-text matching: is this caption this image's? One in-batch negative per positive."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of range(n) with no fixed point (n >= 2): each row's negative partner."""
    if n < 2:
        raise ValueError("ITM needs at least 2 samples per batch to draw in-batch negatives")
    shift = rng.integers(1, n)
    order = rng.permutation(n)
    partner = np.empty(n, dtype=np.int64)
    partner[order] = order[(np.arange(n) + shift) % n]
    return partner


def negative_pairs(
    n: int, rng: np.random.Generator, swap: str = "both"
) -> tuple[np.ndarray, np.ndarray]:
    """(caption index, image index) of n negatives: swapped captions, swapped images or a mix."""
    partner = derangement(n, rng)
    own = np.arange(n)
    if swap == "caption":
        return partner, own
    if swap == "image":
        return own, partner
    if swap != "both":
        raise ValueError(f"unknown itm swap {swap!r}; use 'caption', 'image' or 'both'")
    swap_caption = rng.random(n) < 0.5
    return np.where(swap_caption, partner, own), np.where(swap_caption, own, partner)


def loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of match (1) / mismatch (0), and accuracy."""
    value = F.cross_entropy(logits.float(), labels)
    accuracy = (logits.argmax(-1) == labels).float().mean().detach()
    return value, accuracy
