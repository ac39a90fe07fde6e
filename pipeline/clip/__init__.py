"""CLIP scoring of downloaded pairs and LAIT's best-caption-per-image aggregation.

The model step (`pipeline.clip.scorer.ScoreWithClip`) is not imported here: it needs torch.
"""

from pipeline.clip.aggregate import BestCaptionPerImage, best_caption_of_image
from pipeline.clip.config import (
    DEMO_CLIP_MODEL,
    DEMO_CONTENT_HEADS,
    KNOWN_MIN_SCORES,
    ClipConfig,
    ClipModelNotNamedError,
    ContentHeadConfig,
    demo_clip_config,
)
from pipeline.clip.records import EMBEDDINGS_TAG
from pipeline.clip.score import ClipScore, ClipScoreWithEmbeddings

__all__ = [
    "DEMO_CLIP_MODEL",
    "DEMO_CONTENT_HEADS",
    "EMBEDDINGS_TAG",
    "KNOWN_MIN_SCORES",
    "BestCaptionPerImage",
    "ClipConfig",
    "ClipModelNotNamedError",
    "ClipScore",
    "ClipScoreWithEmbeddings",
    "ContentHeadConfig",
    "best_caption_of_image",
    "demo_clip_config",
]
