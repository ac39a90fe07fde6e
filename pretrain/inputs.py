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
    "itm_input_ids",
    "itm_attention_mask",
    "itm_labels",
    "itc_input_ids",
    "itc_attention_mask",
    "image_ids",
    "caption_ids",
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

    The masked pass gets the B matched samples: MLM-masked captions and their regions masked
    for MOC and MRFR. The clean pass gets the ITM rows unmasked: row j pairs caption row
    `caption_index[j]` with image `image_index[j]`, so ITM, soft masks and grounding see what
    evaluation sees.

    `pixels` regions pass the B images once (`pixel_values`, `image_index`): the model's
    backbone makes their regions. `augment` distorts the ITC views (text masking needs
    `mask_token_id`); `soft_mask_skip_ids` (non-content token ids) picks each matched clean
    row's word for soft masks (`soft_mask_words`).
    """
    inputs = {k: batch[k].to(device, non_blocking=True) for k in _TEXT_KEYS}
    rows = batch["image_index"].to(device)
    matched = inputs["itm_labels"] == 1
    if soft_mask_skip_ids is not None:
        inputs["soft_mask_words"] = soft_mask.pick_words(
            inputs["itm_input_ids"],
            inputs["itm_attention_mask"],
            matched,
            None,
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
        features, masked = mask_regions(
            regions.features, regions.mask, generator, probability=region_mask_probability
        )
        paired = regions.index(rows)
        inputs.update(
            region_features=features,
            region_boxes=regions.boxes,
            region_mask=regions.mask,
            masked_regions=masked,
            region_targets=regions.features,
            itm_region_features=paired.features,
            itm_region_boxes=paired.boxes,
            itm_region_mask=paired.mask,
            itc_region_features=regions.features,
            itc_region_boxes=regions.boxes,
            itc_region_mask=regions.mask,
        )
        if regions.class_probs is not None:
            inputs["region_probs"] = regions.class_probs
        if augment is not None and (augment.region_noise or augment.region_dropout):
            inputs["itc_region_features"] = augmentation.distort_regions(
                regions.features,
                regions.mask,
                augment.region_noise,
                augment.region_dropout,
                generator,
            )
    if "grounding_points" in batch:
        # Targets are per caption: each clean row takes its caption's, on matched rows only.
        captions = batch["caption_index"].to(device)
        inputs["grounding_points"] = batch["grounding_points"].to(device)[captions]
        inputs["grounding_mask"] = batch["grounding_mask"].to(device)[captions] & matched[:, None]
    return inputs
