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


def hard_negative_pairs(
    similarity: torch.Tensor, swap: str = "both", generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(caption index, image index) of one hard negative per matched pair (ALBEF's sampling).

    `similarity` is images x captions (unimodal embeddings, as ITC scores them). Image i gets a
    caption j != i drawn with probability softmax(similarity[i]) over the others, and caption i
    an image drawn the same way from similarity[:, i]; `swap` picks which (or a coin flip per
    pair, "both"), as `negative_pairs` does for random negatives.
    """
    n = similarity.shape[0]
    if n < 2:
        raise ValueError("ITM needs at least 2 samples per batch to draw in-batch negatives")
    eye = torch.eye(n, dtype=torch.bool, device=similarity.device)
    logits = similarity.detach().float().masked_fill(eye, float("-inf"))
    hard_caption = torch.multinomial(logits.softmax(dim=1), 1, generator=generator).squeeze(1)
    hard_image = torch.multinomial(logits.t().softmax(dim=1), 1, generator=generator).squeeze(1)
    own = torch.arange(n, device=similarity.device)
    if swap == "caption":
        return hard_caption, own
    if swap == "image":
        return own, hard_image
    if swap != "both":
        raise ValueError(f"unknown itm swap {swap!r}; use 'caption', 'image' or 'both'")
    swap_caption = torch.rand(n, generator=generator, device=similarity.device) < 0.5
    return torch.where(swap_caption, hard_caption, own), torch.where(swap_caption, own, hard_image)
