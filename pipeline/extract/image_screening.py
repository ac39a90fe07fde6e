"""Recognise images on a page that are not pictures of anything: pixels, placeholders, icons.

Only cheap evidence is used (the URL, the `width`/`height` attributes and inline style,
the `class`): the real pixel size is checked after download by the image filters.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from lait.record import RejectReason

# At most this many pixels in either declared dimension: a tracking pixel or a hairline.
PIXEL_MAX_SIDE = 2
# At most this many pixels in every declared dimension: an icon, a bullet, an emoji.
ICON_MAX_SIDE = 32

# File names of lazy-load placeholders and spacers (the real image comes from JS).
_PLACEHOLDER_NAME = re.compile(
    r"(?:^|[/_.-])(?:blank|spacer|transparent|clear|empty|grey|gray|pixel|1x1|"
    r"placeholder|lazy(?:load)?|loading|loader)(?:[_.-]?\d+(?:x\d+)?)?\.(?:gif|png|svg|webp)$"
)
_PIXEL_PATH = re.compile(
    r"(?:^|[/_.-])(?:pixel|beacon|tracking|tracker|__utm|1x1|spacer)"
    r"(?:\.gif|\.png|\.php|\.aspx?|\.jpe?g)?/?$"
    r"|(?<![0-9])1x1(?![0-9])[^/]*\.(?:gif|png)$"
    r"|/b/ss/"  # Adobe analytics image requests
)
_PIXEL_DOMAINS = (
    "doubleclick.net",
    "google-analytics.com",
    "googletagmanager.com",
    "scorecardresearch.com",
    "quantserve.com",
    "bat.bing.com",
    "stats.wp.com",
)
_PIXEL_SUBDOMAINS = ("pixel.", "beacon.", "analytics.", "tracking.")
_ICON_PATH = re.compile(
    r"favicon|apple-touch-icon|\.ico$|(?:^|[/_.-])(?:icons?|sprites?|emoji|smilies)(?:[/_.-]|$)"
)
_ICON_CLASS = re.compile(r"(?:^|[-_])(?:icons?|sprites?|emoji|smiley|favicon)(?:$|[-_])")
_STYLE_SIDE = re.compile(r"(?:^|[;\s])(width|height)\s*:\s*(\d+(?:\.\d+)?)px", re.IGNORECASE)


def parse_dimension(value: str | None) -> int | None:
    """A declared pixel size from an attribute (`"300"`, `"300px"`); None for `%`, `auto`."""
    if not value:
        return None
    match = re.match(r"\s*(\d{1,6})(?:\.\d*)?\s*(?:px)?\s*$", value, re.IGNORECASE)
    return int(match.group(1)) if match else None


def style_dimensions(style: str | None) -> tuple[int | None, int | None]:
    """Width and height in px declared by an inline `style` attribute, where it says."""
    width = height = None
    for match in _STYLE_SIDE.finditer(style or ""):
        side = int(float(match.group(2)))
        if match.group(1).lower() == "width":
            width = side
        else:
            height = side
    return width, height


def is_placeholder_url(raw: str) -> bool:
    """Whether URL text is a lazy-load placeholder: a `data:` URI or a blank/spacer image."""
    text = raw.strip().lower()
    if text.startswith("data:"):
        return True
    path = text.split("?", 1)[0].split("#", 1)[0]
    return bool(_PLACEHOLDER_NAME.search(path))


def screen_image(
    url: str,
    *,
    width: int | None = None,
    height: int | None = None,
    css_class: str = "",
) -> tuple[RejectReason, str] | None:
    """Why the image at absolute `url` is no candidate (reason, detail), or None if it may be.

    `width`/`height` are the declared sizes, when the page declares them.
    """
    sides = [side for side in (width, height) if side is not None]
    if sides and min(sides) <= PIXEL_MAX_SIDE:
        return RejectReason.TRACKING_PIXEL, f"declared size {width}x{height}"
    parts = urlsplit(url.lower())
    host, path = parts.hostname or "", parts.path
    if host.startswith(_PIXEL_SUBDOMAINS) or any(
        host == domain or host.endswith("." + domain) for domain in _PIXEL_DOMAINS
    ):
        return RejectReason.TRACKING_PIXEL, f"tracking host {host}"
    if (host.endswith("facebook.com") and path.rstrip("/") == "/tr") or _PIXEL_PATH.search(path):
        return RejectReason.TRACKING_PIXEL, "tracking-pixel URL pattern"
    if is_placeholder_url(path):
        return RejectReason.TRACKING_PIXEL, "placeholder or spacer image"
    if _ICON_PATH.search(path):
        return RejectReason.ICON, "icon URL pattern"
    for token in css_class.lower().split():
        if _ICON_CLASS.search(token):
            return RejectReason.ICON, f"icon class {token!r}"
    if sides and max(sides) <= ICON_MAX_SIDE:
        return RejectReason.ICON, f"declared size {width}x{height}"
    return None
