"""Assemble the model's inputs from a collated batch and its encoded regions."""

from __future__ import annotations

from typing import Any

import torch

from pretrain.objectives.region_masking import mask_regions
from pretrain.regions.base import Regions

_TEXT_KEYS = (
    "input_ids",
    "attention_mask",
    "mlm_labels",
    "positive",
    "itm_labels",
    "itc_input_ids",
    "itc_attention_mask",
)


def model_inputs(
    batch: dict[str, Any],
    regions: Regions,
    generator: torch.Generator,
    device: torch.device | str,
    region_mask_probability: float = 0.15,
) -> dict[str, torch.Tensor]:
    """Keyword arguments for `ImageBertForPreTraining.forward`.

    Row j pairs caption row j with image `image_index[j]`; its regions are masked (for MOC and
    MRFR) whether or not it is a matched pair, so ITM cannot tell pairs apart by the masking.
    """
    inputs = {k: batch[k].to(device, non_blocking=True) for k in _TEXT_KEYS}
    rows = batch["image_index"].to(device)
    paired = regions.index(rows)
    features, masked = mask_regions(
        paired.features, paired.mask, generator, probability=region_mask_probability
    )
    inputs.update(
        region_features=features,
        region_boxes=paired.boxes,
        region_mask=paired.mask,
        masked_regions=masked,
        region_targets=paired.features,
        itc_region_features=regions.features,
        itc_region_boxes=regions.boxes,
        itc_region_mask=regions.mask,
    )
    if paired.class_probs is not None:
        inputs["region_probs"] = paired.class_probs
    return inputs
