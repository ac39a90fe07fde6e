"""The CLIP filter's options (nested in the pipeline config as `clip`).

A CLIP score threshold belongs to a model: cosine similarities of different models live on
different scales. `min_score` left unset takes the model's entry in `KNOWN_MIN_SCORES`;
a model not listed there must be given one (measure it: `bench/filter_quality.py`).

There is no default model. The one LAIT ships, "lait-demo-clip", knows only the demo web's
synthetic shapes: as a silent default it rejected every real image of a real crawl as
LOW_CLIP_SCORE. So a job names its model (`lait demo` names the demo one), or turns CLIP
scoring off with `enabled: false`, and `require_model` stops it before any work otherwise.

Content heads (`nonnatural`, `unsafe`, `watermark`) read the image embedding CLIP scoring
computes and reject above their threshold. All are off by default: the two LAIT ships
(lait-demo-nonnatural, lait-demo-watermark) suit the demo CLIP on demo-web images only, so
`lait demo` names them; a real crawl names heads trained for its model by path.

At scale (`device: cuda`), `accelerator` is the Dataflow resource hint the scoring step
asks for, e.g. "type:nvidia-tesla-t4;count:1;install-nvidia-driver"; each worker process
loads the model once (`apache_beam.utils.shared.Shared`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

DEMO_CLIP_MODEL = "lait-demo-clip"  # = lait.models.clip.DEMO_MODEL (not imported: torch)

NO_MODEL_MESSAGE = (
    "clip: no CLIP model named. LAIT ships only a demo model (lait-demo-clip), trained on "
    "the demo web's synthetic shapes, which rejects real images; name the model that scores "
    "your pairs: an open_clip name and pretrained tag (--set clip.model=ViT-B-32 "
    "--set clip.pretrained=laion2b_s34b_b79k, which open_clip downloads) or a local "
    "checkpoint as the tag (--set clip.pretrained=/models/vit-b-32.pt), and "
    "--set clip.min_score=... for a model LAIT has no threshold for (known: {known}); "
    "or turn CLIP scoring off (--set clip.enabled=false). Crawling the demo web? "
    "--set clip.model=lait-demo-clip, as `lait demo` does. "
    "In a YAML config: clip: {{model: ..., pretrained: ...}}."
)


@dataclasses.dataclass(frozen=True)
class ContentHeadConfig:
    """One content head: which file or shipped name (`head`; None: off) and the probability
    above which a pair is rejected (`threshold`); `reject=False` only records the
    probability (LAION ships `punsafe`/`pwatermark` that way)."""

    head: str | None = None
    threshold: float = 0.5
    reject: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError("clip: a content head's threshold is a probability, within [0, 1]")

    @property
    def enabled(self) -> bool:
        """Whether this head runs."""
        return self.head is not None


class ClipModelNotNamedError(ValueError):
    """A job would score with CLIP but names no model (there is no default)."""


# Minimum image-text cosine similarity per model (model name as given to `load_clip`).
KNOWN_MIN_SCORES: dict[str, float] = {
    # LAION-400M/5B (English subset): 0.28 with OpenAI's ViT-B/32.
    "ViT-B-32": 0.28,
    # Measured on the demo web (site seed 1000: 1256 matched vs 54 mismatched captions,
    # AUC 0.99986, matched >= 0.690, mismatched <= 0.838): the highest cut keeping precision
    # >= 0.96 there, because near-miss mismatches (one shape or side changed) score close to
    # matched pairs. Only means anything for the demo model on demo-web images; see
    # lait/models/weights/lait-demo-clip.train.json and scripts/train_demo_clip.py.
    "lait-demo-clip": 0.785,
}


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """Which CLIP model scores pairs, and which scores are kept.

    `policy="threshold"`: a pair passes when its score reaches the minimum of its caption's
    language (`min_score_by_language`, else `min_score`, else the model's known minimum).
    `policy="top_fraction"`: per language, the best `top_fraction` of pairs pass (the cut is
    a global approximate quantile over the run). `keep_embeddings`: also emit
    (key, image embedding, text embedding) for every scored pair (`ClipScoreWithEmbeddings`).
    Scores are rounded to `score_digits`, so that float noise from batch composition (which
    changes summation order) never changes a score or a decision between reruns.
    `best_caption_per_image`: LAIT's aggregation, keep only the best-scored caption of each
    image (False keeps every caption that passes). `enabled=False` skips CLIP scoring (and
    best-caption-per-image, which ranks by score): no model is needed, no pair gets a score.
    """

    enabled: bool = True
    model: str | None = None  # no default: see the module docstring
    pretrained: str | None = None
    device: str = "cpu"
    policy: Literal["threshold", "top_fraction"] = "threshold"
    min_score: float | None = None
    min_score_by_language: dict[str, float] = dataclasses.field(default_factory=dict)
    top_fraction: float = 0.9
    top_fraction_by_language: dict[str, float] = dataclasses.field(default_factory=dict)
    batch_size: int = 256
    torch_threads: int | None = None
    keep_embeddings: bool = False
    score_digits: int = 4
    best_caption_per_image: bool = True
    nonnatural: ContentHeadConfig = dataclasses.field(default_factory=ContentHeadConfig)
    unsafe: ContentHeadConfig = dataclasses.field(default_factory=ContentHeadConfig)
    watermark: ContentHeadConfig = dataclasses.field(default_factory=ContentHeadConfig)
    accelerator: str | None = None  # Dataflow resource hint of the scoring step (GPU)

    def __post_init__(self) -> None:
        if (
            self.policy == "threshold"
            and self.model is not None
            and self.min_score is None
            and self.model not in KNOWN_MIN_SCORES
            and not self.min_score_by_language
        ):
            raise ValueError(
                f"clip: no known minimum score for model {self.model!r}; set clip.min_score "
                f"(thresholds are model-specific; known: {sorted(KNOWN_MIN_SCORES)})"
            )
        fractions = [self.top_fraction, *self.top_fraction_by_language.values()]
        if any(not 0.0 < f <= 1.0 for f in fractions):
            raise ValueError("clip: top fractions must be within (0, 1]")
        if self.batch_size < 1:
            raise ValueError("clip: batch_size must be at least 1")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"clip: device {self.device!r} is not cpu, cuda or cuda:N")

    def content_heads(self) -> dict[str, ContentHeadConfig]:
        """The heads that run, by signal (nonnatural, unsafe, watermark), in that order."""
        heads = {"nonnatural": self.nonnatural, "unsafe": self.unsafe, "watermark": self.watermark}
        return {signal: head for signal, head in heads.items() if head.enabled}

    def require_model(self) -> str:
        """The model's name; raises `ClipModelNotNamedError` (saying what to give) if none."""
        if self.model is None:
            raise ClipModelNotNamedError(NO_MODEL_MESSAGE.format(known=sorted(KNOWN_MIN_SCORES)))
        return self.model

    @property
    def default_min_score(self) -> float:
        """The minimum for languages without their own: `min_score` or the model's known one."""
        if self.min_score is not None:
            return self.min_score
        return KNOWN_MIN_SCORES.get(self.model or "", 0.0)

    def min_score_for(self, language: str | None) -> float:
        """The threshold-policy minimum for a caption in `language`."""
        if language is not None and language in self.min_score_by_language:
            return float(self.min_score_by_language[language])
        return self.default_min_score

    def provenance(self) -> dict[str, Any]:
        """What stats.json records of the filter: the model and the thresholds it applied.

        `threshold` is the minimum for captions without a language of their own (None under
        the top-fraction policy, whose cuts depend on the run's scores).
        """
        threshold_policy = self.enabled and self.policy == "threshold"
        return {
            "enabled": self.enabled,
            "model": self.model,
            "pretrained": self.pretrained,
            "policy": self.policy,
            "threshold": self.default_min_score if threshold_policy else None,
            "threshold_by_language": dict(self.min_score_by_language) if threshold_policy else {},
            "top_fraction": self.top_fraction if self.enabled and not threshold_policy else None,
            "top_fraction_by_language": (
                dict(self.top_fraction_by_language) if self.enabled and not threshold_policy else {}
            ),
            "content_heads": {
                signal: {"head": head.head, "threshold": head.threshold, "reject": head.reject}
                for signal, head in self.content_heads().items()
            }
            if self.enabled
            else {},
        }

    def top_fraction_for(self, language: str | None) -> float:
        """The top-fraction-policy share kept of captions in `language`."""
        if language is not None and language in self.top_fraction_by_language:
            return float(self.top_fraction_by_language[language])
        return self.top_fraction


# The content heads LAIT ships (= lait.models.content.DEMO_HEADS; not imported: torch).
DEMO_CONTENT_HEADS: dict[str, str] = {
    "nonnatural": "lait-demo-nonnatural",
    "watermark": "lait-demo-watermark",
}


def demo_clip_config(**changes: Any) -> ClipConfig:
    """The demo web's CLIP filter: the demo CLIP, its threshold, and the demo content heads
    (non-natural and watermark reject; unsafe has no demo content and stays off).
    For `lait demo`, benches and tests on the demo web only: these models know nothing but
    its shapes."""
    values: dict[str, Any] = {
        "model": DEMO_CLIP_MODEL,
        # Both thresholds were picked on the heads' validation split (3000 generator images,
        # never a demo site) as the highest-recall cut whose precision at the demo web's 2.5%
        # base rate stays >= 0.97: lait/models/weights/lait-demo-heads.train.json.
        "nonnatural": ContentHeadConfig(head=DEMO_CONTENT_HEADS["nonnatural"], threshold=0.9986),
        "watermark": ContentHeadConfig(head=DEMO_CONTENT_HEADS["watermark"], threshold=0.9941),
    }
    values.update(changes)
    return ClipConfig(**values)
