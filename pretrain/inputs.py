"""Assemble the model's inputs from a collated batch and its encoded regions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pretrain.objectives import augment as augmentation
from pretrain.objectives import soft_mask
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
    *,
    augment: augmentation.AugmentConfig | None = None,
    mask_token_id: int | None = None,
    soft_mask_skip_ids: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """Keyword arguments for `ImageBertForPreTraining.forward`.

    Row j pairs caption row j with image `image_index[j]`; its regions are masked (for MOC and
    MRFR) whether or not it is a matched pair, so ITM cannot tell pairs apart by the masking.

    `pixels` regions pass the B images once (`pixel_values`, `image_index`): the model's
    backbone makes their regions. `augment` distorts the ITC views (text masking needs
    `mask_token_id`); `soft_mask_skip_ids` (non-content token ids) picks each matched row's
    word for soft masks (`soft_mask_words`).
    """
    inputs = {k: batch[k].to(device, non_blocking=True) for k in _TEXT_KEYS}
    rows = batch["image_index"].to(device)
    if soft_mask_skip_ids is not None:
        inputs["soft_mask_words"] = soft_mask.pick_words(
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["positive"],
            inputs["mlm_labels"],
            soft_mask_skip_ids,
            generator,
        )
    augment = augment if augment is not None and augment.enabled else None
    if augment is not None and augment.text_mask:
        if mask_token_id is None:
            raise ValueError("augment.text_mask needs the tokenizer's mask_token_id")
        inputs["itc_input_ids"] = augmentation.mask_text(
            inputs["itc_input_ids"],
            inputs["itc_attention_mask"],
            mask_token_id,
            augment.text_mask,
            generator,
        )
    if regions.pixels is not None:
        inputs.update(pixel_values=regions.pixels, image_index=rows)
        if augment is not None and (augment.crop_scale < 1.0 or augment.color_jitter):
            inputs["itc_pixel_values"] = augmentation.distort_pixels(
                regions.pixels, augment.crop_scale, augment.color_jitter, generator
            )
    else:
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
        if augment is not None and (augment.region_noise or augment.region_dropout):
            inputs["itc_region_features"] = augmentation.distort_regions(
                regions.features,
                regions.mask,
                augment.region_noise,
                augment.region_dropout,
                generator,
            )
    if "grounding_points" in batch:
        # Targets are per caption; a matched row's caption is its image's, so index by image.
        positive = inputs["positive"].bool()[:, None]
        inputs["grounding_points"] = batch["grounding_points"].to(device)[rows]
        inputs["grounding_mask"] = batch["grounding_mask"].to(device)[rows] & positive
    return inputs
