"""Language identification of captions with fastText, as a Beam transform."""

from pipeline.langid.config import LanguageConfig
from pipeline.langid.transform import LanguageFilter, LanguageVerdict, decide_language

__all__ = ["LanguageConfig", "LanguageFilter", "LanguageVerdict", "decide_language"]
