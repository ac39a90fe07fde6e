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


def negative_partners(
    n: int, rng: np.random.Generator, repeat: np.ndarray | None = None
) -> np.ndarray:
    """Each row's negative partner: a derangement, then any partner that shares the row's image
    or caption (`repeat`, n x n) redrawn among those that don't; -1 where there is none (a
    batch of one image's captions)."""
    partner = derangement(n, rng)
    if repeat is None:
        return partner
    for row in np.flatnonzero(repeat[np.arange(n), partner]):
        allowed = np.flatnonzero(~repeat[row])
        partner[row] = rng.choice(allowed) if len(allowed) else -1
    return partner


def negative_pairs(
    n: int, rng: np.random.Generator, swap: str = "both", repeat: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(caption index, image index, valid) of n negatives: swapped captions, swapped images or
    a mix. `repeat` (n x n, True where two rows share an image or caption) keeps repeats from
    being negatives; a row with no other content gets its own pair back and valid False."""
    if swap not in ("caption", "image", "both"):
        raise ValueError(f"unknown itm swap {swap!r}; use 'caption', 'image' or 'both'")
    partner = negative_partners(n, rng, repeat)
    valid = partner >= 0
    own = np.arange(n)
    partner = np.where(valid, partner, own)
    if swap == "caption":
        return partner, own, valid
    if swap == "image":
        return own, partner, valid
    swap_caption = rng.random(n) < 0.5
    return np.where(swap_caption, partner, own), np.where(swap_caption, own, partner), valid


IGNORE = -100  # an ITM row without a label (no valid negative in its batch)


def loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of match (1) / mismatch (0), and accuracy; rows labelled IGNORE don't count."""
    counted = labels != IGNORE
    if not bool(counted.any()):
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    value = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE)
    accuracy = (logits.argmax(-1) == labels)[counted].float().mean().detach()
    return value, accuracy


def hard_negative_pairs(
    logits: torch.Tensor,
    swap: str = "both",
    generator: torch.Generator | None = None,
    repeat: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(caption index, image index, valid) of one hard negative per matched pair (ALBEF).

    `logits` is images x captions, the ITC logits: cosine similarities times the ITC logit
    scale (raw cosines in [-1, 1] would make the softmax nearly uniform). Image i gets a caption
    j drawn with probability softmax(logits[i]) over the captions that are not its own and
    share neither its image nor its caption (`repeat`, True where rows do), and caption i an
    image drawn the same way from logits[:, i]; `swap` picks which (or a coin flip per pair,
    "both"). A row with no allowed partner keeps its own pair, valid False.
    """
    n = logits.shape[0]
    if n < 2:
        raise ValueError("ITM needs at least 2 samples per batch to draw in-batch negatives")
    if swap not in ("caption", "image", "both"):
        raise ValueError(f"unknown itm swap {swap!r}; use 'caption', 'image' or 'both'")
    own = torch.arange(n, device=logits.device)
    blocked = torch.eye(n, dtype=torch.bool, device=logits.device)
    if repeat is not None:
        blocked |= repeat.to(logits.device)
    valid = ~blocked.all(dim=1)
    # Rows with nothing allowed draw from a dummy uniform row and are then set back to their own.
    scores = logits.detach().float().masked_fill(blocked, float("-inf"))
    scores[~valid] = 0.0
    hard_caption = torch.multinomial(scores.softmax(dim=1), 1, generator=generator).squeeze(1)
    hard_image = torch.multinomial(scores.t().softmax(dim=1), 1, generator=generator).squeeze(1)
    hard_caption = torch.where(valid, hard_caption, own)
    hard_image = torch.where(valid, hard_image, own)
    if swap == "caption":
        return hard_caption, own, valid
    if swap == "image":
        return own, hard_image, valid
    swap_caption = torch.rand(n, generator=generator, device=logits.device) < 0.5
    return (
        torch.where(swap_caption, hard_caption, own),
        torch.where(swap_caption, own, hard_image),
        valid,
    )
