"""Parse `srcset` attributes and pick the largest image they offer.

Follows the HTML standard's parsing: a URL is a run of non-whitespace characters (so the
commas inside a `data:` URI or a CDN URL like `.../w_300,h_200/x.jpg` stay in it), a
trailing comma ends a candidate, and descriptors (`640w`, `2x`) run to the next comma.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class SrcsetCandidate:
    """One image candidate of a srcset: its URL and its width or density descriptor."""

    url: str
    width: int | None = None
    density: float | None = None


def _parse_descriptors(text: str) -> tuple[int | None, float | None]:
    width: int | None = None
    density: float | None = None
    for token in text.split():
        unit, number = token[-1:].lower(), token[:-1]
        try:
            if unit == "w":
                width = int(number)
            elif unit == "x":
                density = float(number)
        except ValueError:
            continue
    return width, density


def parse_srcset(value: str) -> list[SrcsetCandidate]:
    """The candidates of a srcset attribute, in document order."""
    candidates: list[SrcsetCandidate] = []
    pos, end = 0, len(value)
    while pos < end:
        while pos < end and (value[pos].isspace() or value[pos] == ","):
            pos += 1
        if pos >= end:
            break
        start = pos
        while pos < end and not value[pos].isspace():
            pos += 1
        url = value[start:pos]
        descriptors = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            start, depth = pos, 0
            while pos < end and not (value[pos] == "," and depth == 0):
                if value[pos] == "(":
                    depth += 1
                elif value[pos] == ")":
                    depth = max(0, depth - 1)
                pos += 1
            descriptors = value[start:pos]
        if url:
            width, density = _parse_descriptors(descriptors)
            candidates.append(SrcsetCandidate(url, width, density))
    return candidates


def largest_srcset_url(value: str) -> str | None:
    """The URL of the largest candidate: the biggest `w`, else the biggest `x` (default 1x).

    `data:` candidates lose to any real URL; ties go to the first candidate.
    """
    candidates = parse_srcset(value)
    real = [c for c in candidates if not c.url.lower().startswith("data:")]
    pool = real or candidates
    if not pool:
        return None
    if any(c.width is not None for c in pool):
        return max(pool, key=lambda c: c.width if c.width is not None else -1).url
    return max(pool, key=lambda c: c.density if c.density is not None else 1.0).url
