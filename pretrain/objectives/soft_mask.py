"""Text-driven soft masks (Park & Han, CVPR 2023): harder ITM examples from a word's attention.

For a matched pair, pick a word of the caption (a random content word), read the multimodal
encoder's last-layer attention from that word to the regions, and scale the most relevant
regions' features down in proportion to their relevance (down-weighted, not removed). The
soft-masked pair is a new ITM example: still "matched" (the paper: the caption still describes
the image, so the model must match on the rest of the evidence) or, by config, "unmatched".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from pretrain.objectives import mlm

# Words whose attention says little about where an object is.
STOPWORDS: tuple[str, ...] = (
    "a", "an", "the", "and", "or", "of", "in", "on", "at", "to", "with", "by", "for", "from",
    "is", "are", "was", "were", "be", "been", "it", "its", "this", "that", "these", "those",
    "there", "here", "some", "two", "three", "four", "five", "one", "each", "his", "her", "their",
    "our", "your", "as", "into", "onto", "over", "under", "near", "next", "beside", "behind",
    "above", "below", "left", "right", "top", "bottom",
)  # fmt: skip


@dataclass(frozen=True)
class SoftMaskConfig:
    """How soft-masked ITM examples are made (the `soft_mask:` section of a stage).

    `select`: "top_k" masks the `top_k` most attended regions, "threshold" every region whose
    relevance (attention normalised to a maximum of 1) is >= `threshold`. A masked region's
    feature is multiplied by 1 - `strength` * relevance. `label`: "matched" (the paper) or
    "unmatched". The loss weight is the `soft_itm` objective's.
    """

    select: str = "top_k"
    top_k: int = 3
    threshold: float = 0.5
    strength: float = 1.0
    label: str = "matched"

    def __post_init__(self) -> None:
        if self.select not in ("top_k", "threshold"):
            raise ValueError(f"soft_mask.select is 'top_k' or 'threshold', not {self.select!r}")
        if self.label not in ("matched", "unmatched"):
            raise ValueError(f"soft_mask.label is 'matched' or 'unmatched', not {self.label!r}")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"soft_mask.strength is in 0..1, not {self.strength}")


def non_content_ids(tokenizer: object) -> list[int]:
    """Token ids never chosen as the masking word: special tokens, stopwords, punctuation."""
    vocab: dict[str, int] = tokenizer.get_vocab()  # type: ignore[attr-defined]
    ids = set(getattr(tokenizer, "all_special_ids", []))
    ids.update(vocab[w] for w in STOPWORDS if w in vocab)
    ids.update(i for token, i in vocab.items() if len(token) == 1 and not token.isalnum())
    return sorted(ids)


def pick_words(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    positive: torch.Tensor,
    mlm_labels: torch.Tensor | None,
    skip_ids: Iterable[int],
    generator: torch.Generator,
) -> torch.Tensor:
    """One random content-word position per matched row (-1 where none or unmatched).

    A word is content unless its id is in `skip_ids`; MLM-masked positions are skipped too (the
    model does not see the word there). The draw is on the CPU with `generator`.
    """
    ids = input_ids.detach().cpu()
    allowed = attention_mask.detach().cpu().bool() & positive.detach().cpu().bool()[:, None]
    skip = torch.tensor(sorted(set(skip_ids)), dtype=ids.dtype)
    allowed &= ~torch.isin(ids, skip)
    if mlm_labels is not None:
        allowed &= mlm_labels.detach().cpu() == mlm.IGNORE
    draw = torch.rand(ids.shape, generator=generator).masked_fill(~allowed, -1.0)
    words = draw.argmax(dim=1)
    words[~allowed.any(dim=1)] = -1
    return words.to(input_ids.device)


def relevance(attention: torch.Tensor, region_mask: torch.Tensor) -> torch.Tensor:
    """A word's attention over regions (N x R) normalised to a maximum of 1 per row."""
    attention = attention.float().masked_fill(~region_mask.bool(), 0.0)
    return attention / attention.amax(dim=1, keepdim=True).clamp(min=1e-12)


def apply(
    features: torch.Tensor,
    attention: torch.Tensor,
    region_mask: torch.Tensor,
    config: SoftMaskConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(soft-masked features N x R x F, which regions were masked N x R).

    `attention` is the chosen word's attention over the N rows' R regions.
    """
    rel = relevance(attention, region_mask)
    valid = region_mask.bool()
    if config.select == "top_k":
        k = min(config.top_k, rel.shape[1])
        top = rel.masked_fill(~valid, -1.0).topk(k, dim=1).indices
        chosen = torch.zeros_like(valid).scatter(1, top, True) & valid
    else:
        chosen = (rel >= config.threshold) & valid
    scale = torch.where(chosen, 1.0 - config.strength * rel, torch.ones_like(rel))
    return features * scale[..., None].to(features.dtype), chosen
