"""CLIP scoring of downloaded pairs and LAIT's best-caption-per-image aggregation."""

from pipeline.clip.aggregate import BestCaptionPerImage, best_caption_of_image
from pipeline.clip.config import (
    DEMO_CLIP_MODEL,
    KNOWN_MIN_SCORES,
    ClipConfig,
    ClipModelNotNamedError,
)
from pipeline.clip.score import EMBEDDINGS_TAG, ClipScore, ClipScoreWithEmbeddings, ScoreWithClip

__all__ = [
    "DEMO_CLIP_MODEL",
    "EMBEDDINGS_TAG",
    "KNOWN_MIN_SCORES",
    "BestCaptionPerImage",
    "ClipConfig",
    "ClipModelNotNamedError",
    "ClipScore",
    "ClipScoreWithEmbeddings",
    "ScoreWithClip",
    "best_caption_of_image",
]
