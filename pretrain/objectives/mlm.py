"""Masked language modelling: 15% of caption tokens, 80% [MASK] / 10% random / 10% kept."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IGNORE = -100


def mask_tokens(
    input_ids: np.ndarray,
    special: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_token_id: int,
    vocab_size: int,
    probability: float = 0.15,
    word_ids: list[list[int | None]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Masked copy of `input_ids` (N x L) and labels (IGNORE where not masked).

    `special` marks [CLS]/[SEP]/[PAD], never masked. With `word_ids` (whole-word masking)
    all pieces of a chosen word are masked together. At least one token per row is masked
    so every row contributes to the loss.
    """
    ids = input_ids.copy()
    chosen = rng.random(ids.shape) < probability
    if word_ids is not None:
        for row, words in enumerate(word_ids):
            # A word is chosen by its first piece; its other pieces follow.
            first: dict[int, bool] = {}
            for col, word in enumerate(words):
                if word is None:
                    continue
                chosen[row, col] = first.setdefault(word, bool(chosen[row, col]))
    chosen &= ~special
    for empty in np.flatnonzero(~chosen.any(axis=1)):
        candidates = np.flatnonzero(~special[empty])
        if candidates.size:
            pick = int(rng.choice(candidates))
            chosen[empty, pick] = True
            if word_ids is not None and word_ids[empty][pick] is not None:
                same = [i for i, w in enumerate(word_ids[empty]) if w == word_ids[empty][pick]]
                chosen[empty, same] = True
    labels = np.where(chosen, input_ids, IGNORE)
    action = rng.random(ids.shape)
    ids[chosen & (action < 0.8)] = mask_token_id
    randomised = chosen & (action >= 0.8) & (action < 0.9)
    ids[randomised] = rng.integers(0, vocab_size, size=int(randomised.sum()))
    return ids, labels


def loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over the masked positions (logits already gathered there), and accuracy."""
    if labels.numel() == 0:
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    value = F.cross_entropy(logits.float(), labels)
    accuracy = (logits.argmax(-1) == labels).float().mean().detach()
    return value, accuracy
