"""Image-text contrastive loss (InfoNCE both ways) over unimodal embeddings in a batch.

It also trains the cheap first pass of retrieval, whose top-k ITM then reranks (as ALBEF).
Under DDP the negatives are every rank's batch: embeddings are all-gathered, the local part
keeping its gradient. `gamma > 0` re-weights each query's term by (1 - p)^gamma, p its
probability of the true pair: the focal ITC of Park & Han (CVPR 2023), which leans on the hard
examples; gamma = 0 is plain ITC.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_across_ranks(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(every rank's rows concatenated, the offset of this rank's rows). Only the local rows
    carry gradient (each rank back-propagates its own queries; DDP averages the gradients)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    rank = dist.get_rank()
    parts[rank] = x
    return torch.cat(parts), rank * x.shape[0]


def focal_cross_entropy(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Mean over rows of -(1 - p)^gamma log p, p = softmax(logits)[target]."""
    if gamma == 0:
        return F.cross_entropy(logits, target)
    log_p = F.log_softmax(logits.float(), dim=-1).gather(1, target[:, None]).squeeze(1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()


def loss(
    image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, gamma: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric (focal) cross-entropy of the scaled cosine similarities, and image→text
    accuracy, with every rank's batch as negatives."""
    all_image, offset = gather_across_ranks(image)
    all_text, _ = gather_across_ranks(text)
    target = offset + torch.arange(image.shape[0], device=image.device)
    image_to_text = scale * image @ all_text.t()
    # One process: the same matrix transposed (so gamma = 0 is the plain ITC, bit for bit).
    text_to_image = image_to_text.t() if all_image is image else scale * text @ all_image.t()
    value = (
        focal_cross_entropy(image_to_text, target, gamma)
        + focal_cross_entropy(text_to_image, target, gamma)
    ) / 2
    accuracy = (image_to_text.argmax(-1) == target).float().mean().detach()
    return value, accuracy
