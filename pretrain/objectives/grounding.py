"""Word grounding (PixelLLM-style): regress each caption token's point in the image.

Targets come from Localized Narratives mouse traces (`pretrain.narratives`): the mean trace
point while the token's word was said, (x, y) in 0..1. Only tokens with a target, and only on
matched pairs, count. Point accuracy (the predicted point inside the word's true box) is the
held-out measure; its chance level is the mean box area (a uniformly random point's odds).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def loss(predicted: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth-L1 between predicted and target points (K x 2), and their mean L1 distance."""
    if predicted.shape[0] == 0:
        zero = predicted.sum() * 0.0
        return zero, zero.detach()
    value = F.smooth_l1_loss(predicted.float(), target.float(), beta=0.05)
    distance = (predicted.float() - target.float()).abs().sum(-1).mean().detach()
    return value, distance


def points_in_boxes(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Whether each point (K x 2) lies in its box (K x 4: x1, y1, x2, y2), edges included."""
    x, y = points[:, 0], points[:, 1]
    return (x >= boxes[:, 0]) & (x <= boxes[:, 2]) & (y >= boxes[:, 1]) & (y <= boxes[:, 3])


def point_accuracy(points: torch.Tensor, boxes: torch.Tensor) -> float:
    """The share of points inside their boxes (0.0 for none)."""
    if points.shape[0] == 0:
        return 0.0
    return float(points_in_boxes(points, boxes).float().mean())


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of normalised boxes (K x 4): a uniformly random point's chance to fall inside."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def distance_to_box(points: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of points (... x 2) to one box (4,): 0 inside it."""
    dx = (box[0] - points[..., 0]).clamp(min=0) + (points[..., 0] - box[2]).clamp(min=0)
    dy = (box[1] - points[..., 1]).clamp(min=0) + (points[..., 1] - box[3]).clamp(min=0)
    return torch.sqrt(dx * dx + dy * dy)
