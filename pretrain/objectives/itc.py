"""Image-text contrastive loss (InfoNCE both ways) over unimodal embeddings in a batch.

It also trains the cheap first pass of retrieval, whose top-k ITM then reranks (as ALBEF).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def loss(
    image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric cross-entropy of the scaled cosine similarities, and image→text accuracy."""
    logits = scale * image @ text.t()
    target = torch.arange(image.shape[0], device=image.device)
    value = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    accuracy = (logits.argmax(-1) == target).float().mean().detach()
    return value, accuracy
