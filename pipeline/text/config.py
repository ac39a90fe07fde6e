"""The text filters' options (one frozen object, nested in the pipeline config as `text`)."""

from __future__ import annotations

import dataclasses

# Generic UI words and phrases that say nothing about an image. Users add their own with
# `extra_boilerplate`; matching is on the caption's counting key (lower case, no punctuation),
# and a caption made only of these words and numbers ("image 3", "photo 12") counts too.
DEFAULT_BOILERPLATE: tuple[str, ...] = (
    "advertisement",
    "arrow",
    "avatar",
    "back",
    "banner",
    "blank",
    "button",
    "click",
    "click here",
    "click to enlarge",
    "close",
    "default",
    "download",
    "enlarge",
    "gallery",
    "graphic",
    "home",
    "icon",
    "image",
    "image not found",
    "img",
    "loading",
    "logo",
    "more",
    "next",
    "no image",
    "no image available",
    "null",
    "photo",
    "pic",
    "picture",
    "pixel",
    "placeholder",
    "previous",
    "read more",
    "see more",
    "spacer",
    "thumb",
    "thumbnail",
    "undefined",
    "untitled",
    "view",
    "view larger",
    "view image",
    "zoom",
)


@dataclasses.dataclass(frozen=True)
class TextFilterConfig:
    """Bounds and lists of the text filters. Every rule is a named reject reason.

    Words are whitespace-separated tokens of the cleaned caption. `max_oov_rate` is the
    highest share of word tokens that are not words of any script (codes, hashes, SKUs:
    "x7f3a9", "IMG_0042", "a1b2c3"); with `vocabulary_path` (one word per line), tokens
    missing from that list count as out-of-vocabulary too. `max_images_per_caption` is
    LAIT's "drop texts shared by too many images": a caption (compared by counting key) on
    more distinct image URLs than this is rejected everywhere, counted over the whole run.
    `enabled=False` skips the stage (captions pass as extracted: a raw baseline dataset).
    """

    enabled: bool = True
    min_words: int = 2
    max_words: int = 64
    min_chars: int = 5
    max_chars: int = 512
    boilerplate: tuple[str, ...] = DEFAULT_BOILERPLATE
    extra_boilerplate: tuple[str, ...] = ()
    max_oov_rate: float = 0.5
    vocabulary_path: str | None = None
    max_images_per_caption: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.min_words <= self.max_words:
            raise ValueError("text: need 0 < min_words <= max_words")
        if not 0 < self.min_chars <= self.max_chars:
            raise ValueError("text: need 0 < min_chars <= max_chars")
        if not 0.0 <= self.max_oov_rate <= 1.0:
            raise ValueError("text: max_oov_rate must be between 0 and 1")
        if self.max_images_per_caption < 1:
            raise ValueError("text: max_images_per_caption must be at least 1")
