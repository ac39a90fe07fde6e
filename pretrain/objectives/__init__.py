"""Pre-training objectives, one module each: how its inputs are corrupted and its loss.

MLM (masked language modelling), MOC (masked object classification), MRFR (masked region
feature regression), ITM (image-text matching), ITC (image-text contrastive) and grounding
(each token's point in the image, from Localized Narratives traces). A stage's plan gives each
a weight; 0 turns it off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ObjectiveWeights:
    """Weights of the objectives in a stage's loss (0 = off)."""

    mlm: float = 1.0
    moc: float = 1.0
    mrfr: float = 1.0
    itm: float = 1.0
    itc: float = 0.0
    grounding: float = 0.0  # needs narratives on a source and the model's grounding head
    soft_itm: float = 0.0  # soft-masked ITM examples (the stage's `soft_mask:` section)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


NAMES: tuple[str, ...] = ("mlm", "moc", "mrfr", "itm", "itc", "grounding", "soft_itm")
