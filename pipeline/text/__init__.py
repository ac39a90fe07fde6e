"""Cheap text filters, before any download: cleaning, per-caption rules, shared captions."""

from pipeline.text.cleaning import clean_caption, counting_key
from pipeline.text.config import DEFAULT_BOILERPLATE, TextFilterConfig
from pipeline.text.rules import CaptionVerdict, check_caption
from pipeline.text.transform import TextFilters

__all__ = [
    "DEFAULT_BOILERPLATE",
    "CaptionVerdict",
    "TextFilterConfig",
    "TextFilters",
    "check_caption",
    "clean_caption",
    "counting_key",
]
