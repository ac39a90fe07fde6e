"""Image-text contrastive loss (InfoNCE both ways) over unimodal embeddings in a batch.

It also trains the cheap first pass of retrieval, whose top-k ITM then reranks (as ALBEF).
Under DDP the negatives are every rank's batch: embeddings are all-gathered with gradient, so
the gradient is the whole global batch's, as one process would compute it. `gamma > 0`
re-weights each query's term by (1 - p)^gamma, p its probability of the true pair: the focal
ITC of Park & Han (CVPR 2023), which leans on the hard examples; gamma = 0 is plain ITC.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from pretrain.objectives import repeats


def _world() -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def gather_across_ranks(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(every rank's rows concatenated, the offset of this rank's rows), differentiable.

    The gather's backward sends each rank the gradient its rows receive as other ranks'
    negatives, so after DDP averages, every parameter has the gradient of the loss over the
    whole global batch (a detached gather would drop those terms: the loss value matches, the
    gradient does not). Every rank must give the same number of rows.
    """
    if _world() == 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(x.contiguous())
    return torch.cat(list(parts)), dist.get_rank() * x.shape[0]


def gather_ids(ids: torch.Tensor) -> torch.Tensor:
    """Every rank's ids (no gradient), in rank order."""
    if _world() == 1:
        return ids
    parts = [torch.empty_like(ids) for _ in range(_world())]
    dist.all_gather(parts, ids.contiguous())
    return torch.cat(parts)


def focal_cross_entropy(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Mean over rows of -(1 - p)^gamma log p, p = softmax(logits)[target]."""
    if gamma == 0:
        return F.cross_entropy(logits.float(), target)
    log_p = F.log_softmax(logits.float(), dim=-1).gather(1, target[:, None]).squeeze(1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()


def loss(
    image: torch.Tensor,
    text: torch.Tensor,
    scale: torch.Tensor,
    gamma: float = 0.0,
    image_ids: torch.Tensor | None = None,
    caption_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric (focal) cross-entropy of the scaled cosine similarities, and image→text
    accuracy, with every rank's batch as negatives.

    With `image_ids` and `caption_ids` (one per row), a candidate that shares the query's image
    or caption is left out of the query's softmax: a repeat is not a negative.
    """
    all_image, offset = gather_across_ranks(image)
    all_text, _ = gather_across_ranks(text)
    target = offset + torch.arange(image.shape[0], device=image.device)
    image_to_text = scale * image @ all_text.t()
    # One process: the same matrix transposed (so gamma = 0 is the plain ITC, bit for bit).
    text_to_image = image_to_text.t() if all_image is image else scale * text @ all_image.t()
    if image_ids is not None and caption_ids is not None:
        repeat = repeats.interchangeable(
            image_ids, caption_ids, gather_ids(image_ids), gather_ids(caption_ids)
        )
        repeat[torch.arange(len(target), device=repeat.device), target] = False
        # The relation is symmetric, so one mask serves both directions.
        image_to_text = image_to_text.float().masked_fill(repeat, float("-inf"))
        text_to_image = text_to_image.float().masked_fill(repeat, float("-inf"))
    value = (
        focal_cross_entropy(image_to_text, target, gamma)
        + focal_cross_entropy(text_to_image, target, gamma)
    ) / 2
    accuracy = (image_to_text.argmax(-1) == target).float().mean().detach()
    return value, accuracy
