"""Caption cleaning: what every caption becomes before any rule looks at it."""

from __future__ import annotations

import html
import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")
_TAG = re.compile(r"<[^<>]{0,200}>")
# Control characters separate words where they occur (a tab typed as ^A, a vertical tab, a
# line separator), so they become a space: "control\x01chars" is two words, not one.
_CONTROL = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u2028\u2029]")
# Invisible format characters sit inside words (zero-width spaces, BOMs, bidi marks): dropped.
_INVISIBLE = re.compile(r"[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_PUNCTUATION_OR_SPACE = re.compile(r"[\W_]+", re.UNICODE)


def clean_caption(text: str) -> str:
    """Unescape HTML entities (twice at most: "&amp;amp;" happens), drop stray tags and
    invisible format characters, turn control characters into spaces, normalise Unicode
    (NFC) and collapse whitespace."""
    for _ in range(2):
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    text = _TAG.sub(" ", text)
    text = _CONTROL.sub(" ", text)
    text = _INVISIBLE.sub("", text)
    text = unicodedata.normalize("NFC", text)
    return _WHITESPACE.sub(" ", text).strip()


def counting_key(caption: str) -> str:
    """The form under which captions count as the same text: case-folded, compatibility-
    normalised (NFKC), punctuation and spacing collapsed. "Click here!" == "click  here"."""
    folded = unicodedata.normalize("NFKC", caption).casefold()
    return _PUNCTUATION_OR_SPACE.sub(" ", folded).strip()
