"""Using a grounding head: held-out point accuracy, and ranking captions for a box.

`evaluate_grounding` measures, on the held-out samples that have a narrative with true word
boxes (the demo web's `utterance_boxes`), how often a token's predicted point falls inside its
word's box, beside chance (the mean box area: a uniformly random point's odds).

`rank_captions_for_box` is the retrieval-style form of location-conditioned captioning: given
an image and a box, it scores candidate captions by how close their words' predicted points
fall to the box (see its docstring), best first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pretrain.data import iter_held_out
from pretrain.model import ImageBertForPreTraining
from pretrain.narratives import Narrative, NarrativeIndex, token_targets
from pretrain.objectives.grounding import box_area, distance_to_box, points_in_boxes
from pretrain.regions.base import Regions, RegionSource
from pretrain.shards import CorruptSampleError


@torch.no_grad()
def evaluate_grounding(
    checkpoint: str | os.PathLike[str] | ImageBertForPreTraining,
    sources: Sequence[tuple[str, str]],
    *,
    holdout: float = 1.0,
    region_source: RegionSource | None = None,
    tokenizer: Any = None,
    max_samples: int = 1000,
    batch_size: int = 64,
    max_text_len: int = 40,
    device: str = "cpu",
) -> dict[str, Any]:
    """Point accuracy on the held-out samples of (dataset folder, narratives JSONL) pairs.

    Each token of a held-out narrative's caption whose word has a true box counts once: a hit
    when its predicted point is inside the box. Returns `point_acc`, `chance` (mean box area
    over the same tokens), `words` and `tokens` counted, `samples`, and the mean L1 distance to
    the trace targets (`point_l1`).
    """
    from pretrain.evaluate import _model_folder, region_source_for
    from pretrain.text import load_tokenizer

    if isinstance(checkpoint, ImageBertForPreTraining):
        model = checkpoint
    else:
        model = ImageBertForPreTraining.from_pretrained(str(_model_folder(checkpoint)))
        if region_source is None:
            region_source = region_source_for(checkpoint, device)
        if tokenizer is None and (Path(checkpoint) / "tokenizer.json").exists():
            tokenizer = load_tokenizer(str(checkpoint))
    if region_source is None:
        raise ValueError("pass region_source when evaluating a model object")
    tokenizer = tokenizer or load_tokenizer()
    was_training = model.training
    model.to(device)  # type: ignore[arg-type]
    model.eval()

    prepared: list[dict[str, Any]] = []
    narratives: list[Narrative] = []
    for folder, narratives_path in sources:
        index = NarrativeIndex.load(narratives_path)
        for sample in iter_held_out([folder], holdout, region_source.sidecar_dir):
            if len(narratives) >= max_samples:
                break
            narrative = index.find(sample)
            if narrative is None or not any(b is not None for b in narrative.boxes):
                continue
            try:
                prepared.append(region_source.prepare(sample))
            except (CorruptSampleError, UnicodeDecodeError):
                continue
            narratives.append(narrative)
    if not narratives:
        raise ValueError(
            f"no held-out sample of {[f for f, _ in sources]} has a narrative with word boxes "
            f"(hold-out {holdout}); check the narratives' image_ids match the samples' urls"
        )
    hits = tokens = 0
    area_sum = l1_sum = 0.0
    l1_count = 0
    words = 0
    for start in range(0, len(narratives), batch_size):
        chunk = narratives[start : start + batch_size]
        captions = [n.caption for n in chunk]
        regions = region_source.encode(
            region_source.collate(prepared[start : start + batch_size]), device
        )
        enc = tokenizer(
            captions,
            max_length=max_text_len,
            truncation=True,
            padding="longest",
            return_tensors="pt",
        )
        targets = token_targets(
            tokenizer, captions, chunk, max_text_len, length=enc["input_ids"].shape[1]
        )
        points = model.predict_points(
            enc["input_ids"].to(device),
            enc["attention_mask"].to(device),
            regions.features,
            regions.boxes,
            regions.mask,
        ).cpu()
        box_mask = torch.from_numpy(targets["box_mask"])
        boxes = torch.from_numpy(targets["boxes"])[box_mask]
        predicted = points[box_mask]
        hits += int(points_in_boxes(predicted, boxes).sum())
        tokens += int(box_mask.sum())
        area_sum += float(box_area(boxes).sum())
        mask = torch.from_numpy(targets["mask"])
        l1_sum += float((points[mask] - torch.from_numpy(targets["points"])[mask]).abs().sum())
        l1_count += int(mask.sum())
        words += sum(sum(b is not None for b in n.boxes) for n in chunk)
    if was_training:
        model.train()
    return {
        "samples": len(narratives),
        "words": words,
        "tokens": tokens,
        "point_acc": hits / max(tokens, 1),
        "chance": area_sum / max(tokens, 1),
        "point_l1": l1_sum / max(l1_count, 1),
    }


def caption_box_scores(
    points: torch.Tensor, counted: torch.Tensor, box: Sequence[float]
) -> list[float]:
    """Per caption (rows of points N x L x 2), minus the mean distance of its `counted` tokens'
    points to `box` (0 inside); -inf for a caption with no counted token."""
    distance = distance_to_box(points, torch.tensor(list(box), dtype=points.dtype))
    scores = []
    for row in range(points.shape[0]):
        picked = distance[row][counted[row]]
        scores.append(-float(picked.mean()) if picked.numel() else float("-inf"))
    return scores


@torch.no_grad()
def rank_captions_for_box(
    model: ImageBertForPreTraining,
    tokenizer: Any,
    regions: Regions,
    box: Sequence[float],
    captions: Sequence[str],
    *,
    max_text_len: int = 40,
    ignore: Sequence[str] = ("a", "an", "the", "of", "to", "and", "on", "in", "its", "which"),
) -> list[tuple[str, float]]:
    """Captions for the region `box` (normalised x1, y1, x2, y2) of one image, best first.

    A caption's score is minus the mean distance from its words' predicted points to the box
    (0 for a point inside it), over its tokens except special ones and the function words in
    `ignore` (which a narrator says while the mouse travels): a caption whose words all point
    into the box scores 0. `regions` holds the one image's regions (batch of 1).
    """
    device = regions.features.device
    enc = tokenizer(
        list(captions),
        max_length=max_text_len,
        truncation=True,
        padding="longest",
        return_special_tokens_mask=True,
        return_tensors="pt",
    )
    n = len(captions)
    points = model.predict_points(
        enc["input_ids"].to(device),
        enc["attention_mask"].to(device),
        regions.features.expand(n, -1, -1),
        regions.boxes.expand(n, -1, -1),
        regions.mask.expand(n, -1),
    ).cpu()
    skip = {tokenizer.convert_tokens_to_ids(word) for word in ignore}
    ids = enc["input_ids"]
    counted = ~enc["special_tokens_mask"].bool() & enc["attention_mask"].bool()
    counted &= ~torch.isin(ids, torch.tensor(sorted(skip), dtype=ids.dtype))
    scores = caption_box_scores(points, counted, box)
    order = sorted(range(n), key=lambda i: scores[i], reverse=True)
    return [(captions[i], scores[i]) for i in order]
