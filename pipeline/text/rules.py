"""Per-caption rules, in the order they are tried; the first that fires names the reason.

Order matters where rules overlap: "IMG_0042.jpg" is a file name before it is too short,
"image" is boilerplate before it is too short, so each caption gets its most telling reason.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from lait.record import RejectReason
from pipeline.text.cleaning import clean_caption, counting_key
from pipeline.text.config import TextFilterConfig

_IMAGE_EXTENSIONS = (
    "jpe?g|jpe|jfif|png|gif|webp|bmp|tiff?|svg|heic|heif|avif|ico|raw|cr2|nef|arw|dng|psd"
)
_FILENAME = re.compile(rf"^[^/\\]{{1,120}}\.(?:{_IMAGE_EXTENSIONS})$", re.IGNORECASE)
# Camera and CMS names without an extension: IMG_0042, DSC01234, P1010203, 20190612_142233.
_CAMERA_NAME = re.compile(
    r"^(?:img|dsc[nf]?|dcim|pict?|p|image|photo|screenshot|scan|wp|vid|mvimg|pxl)"
    r"[\s_-]?\d{3,}(?:[\s_-]\d+)*$|^\d{6,}(?:[_-]\d+)*$",
    re.IGNORECASE,
)
_URL = re.compile(
    r"^(?:(?:https?|ftp)://|www\.)\S+$|^(?:[\w-]+\.)+[a-z]{2,24}(?::\d+)?/\S*$"
    r"|^(?:[\w-]+\.)+(?:com|org|net|edu|gov|io|co|uk|de|fr|info|biz)$",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"^[+-]?\d[\d.,:/%x×-]*$")
_EDGE_PUNCTUATION = "\"'“”‘’«»()[]{}<>.,;:!?¡¿…—–-*•·|#@、。，．！？：；「」『』（）・〜"
_WORD_JOINERS = str.maketrans("", "", "-'’.")
_REPEATED = re.compile(r"(.)\1{3,}")
# Scripts written without spaces: each character counts as a word (kana, CJK ideographs,
# Hangul syllables, Thai), everything else by whitespace.
_UNSPACED = "\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_WORDS = re.compile(f"[{_UNSPACED}]|[^\\s{_UNSPACED}]+")


def word_count(caption: str) -> int:
    """Words of `caption`; in scripts without spaces, characters."""
    return len(_WORDS.findall(caption))


@dataclass(frozen=True)
class CaptionVerdict:
    """The cleaned caption, and the reason (with a short detail) if a rule fired."""

    caption: str
    reason: RejectReason | None = None
    detail: str | None = None
    value: float | None = None  # the measure a comparing rule failed (words, OOV rate)
    limit: float | None = None  # and its bound


def _is_word(token: str, vocabulary: Collection[str] | None) -> bool:
    """A token is a word if it is letters of one or more scripts (hyphens and apostrophes
    inside allowed), not absurdly long or repetitive, and in `vocabulary` when one is given."""
    letters = token.translate(_WORD_JOINERS)
    if not letters.isalpha() or len(letters) > 30 or _REPEATED.search(letters.casefold()):
        return False
    return vocabulary is None or token.casefold() in vocabulary


def oov_rate(caption: str, vocabulary: Collection[str] | None = None) -> tuple[float, list[str]]:
    """Share of the caption's non-numeric tokens that are not words, and those tokens."""
    tokens = [t.strip(_EDGE_PUNCTUATION) for t in _WORDS.findall(caption)]
    tokens = [t for t in tokens if t and not _NUMBER.match(t)]
    if not tokens:
        return 0.0, []
    unknown = [t for t in tokens if not _is_word(t, vocabulary)]
    return len(unknown) / len(tokens), unknown


def _is_boilerplate(key: str, phrases: frozenset[str], words: frozenset[str]) -> bool:
    if key in phrases:
        return True
    tokens = key.split()
    meaningful = [t for t in tokens if not t.isdigit()]
    return bool(meaningful) and all(t in words for t in meaningful)


class CaptionRules:
    """The per-caption rules of one config, with its word lists prepared once."""

    def __init__(self, config: TextFilterConfig, vocabulary: Collection[str] | None = None) -> None:
        self.config = config
        phrases = {counting_key(p) for p in (*config.boilerplate, *config.extra_boilerplate)}
        self.boilerplate_phrases = frozenset(p for p in phrases if p)
        self.boilerplate_words = frozenset(p for p in self.boilerplate_phrases if " " not in p)
        self.vocabulary = vocabulary

    def check(self, raw: str) -> CaptionVerdict:
        """Clean `raw` and apply every rule; the verdict holds the cleaned caption."""
        config = self.config
        if "\ufffd" in raw or any("\ud800" <= ch <= "\udfff" for ch in raw):
            return CaptionVerdict(raw, RejectReason.UNDECODABLE_TEXT, "replacement characters")
        caption = clean_caption(raw)
        if _FILENAME.match(caption) or _CAMERA_NAME.match(caption):
            return CaptionVerdict(caption, RejectReason.FILENAME_CAPTION, caption[:80])
        if _URL.match(caption):
            return CaptionVerdict(caption, RejectReason.URL_CAPTION, caption[:80])
        key = counting_key(caption)
        if _is_boilerplate(key, self.boilerplate_phrases, self.boilerplate_words):
            return CaptionVerdict(caption, RejectReason.BOILERPLATE_CAPTION, key[:80])
        words, chars = word_count(caption), len(caption)
        detail = f"{words} words, {chars} chars"
        # value/limit: the count that broke its bound (words first, as the detail reads).
        if words < config.min_words:
            return CaptionVerdict(
                caption, RejectReason.CAPTION_TOO_SHORT, detail, words, config.min_words
            )
        if chars < config.min_chars:
            return CaptionVerdict(
                caption, RejectReason.CAPTION_TOO_SHORT, detail, chars, config.min_chars
            )
        if words > config.max_words:
            return CaptionVerdict(
                caption, RejectReason.CAPTION_TOO_LONG, detail, words, config.max_words
            )
        if chars > config.max_chars:
            return CaptionVerdict(
                caption, RejectReason.CAPTION_TOO_LONG, detail, chars, config.max_chars
            )
        rate, unknown = oov_rate(caption, self.vocabulary)
        if rate > config.max_oov_rate:
            detail = f"{rate:.2f} out of vocabulary: {' '.join(unknown[:5])}"[:120]
            return CaptionVerdict(
                caption, RejectReason.HIGH_OOV_RATE, detail, rate, config.max_oov_rate
            )
        return CaptionVerdict(caption)


def check_caption(
    raw: str, config: TextFilterConfig | None = None, vocabulary: Collection[str] | None = None
) -> CaptionVerdict:
    """One caption through every per-caption rule (convenience; transforms reuse a
    `CaptionRules`)."""
    return CaptionRules(config or TextFilterConfig(), vocabulary).check(raw)
