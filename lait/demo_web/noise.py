"""The kinds of noise the demo web injects, each a ground-truth label on an image reference."""

from __future__ import annotations

from enum import StrEnum


class NoiseKind(StrEnum):
    """What is wrong with one image reference of the demo web (`CLEAN`: nothing).

    A label says what was injected, not what a pipeline must do about it: a redirect chain
    or a slow response may still be fetched, depending on the fetcher's limits.
    """

    CLEAN = "clean"

    # The caption (alt, title, surrounding text or list caption) is unusable.
    MISMATCHED_CAPTION = "mismatched_caption"  # a true caption of another scene
    FILENAME_CAPTION = "filename_caption"  # "IMG_0042.jpg", "DSC01234.JPG"
    BOILERPLATE_CAPTION = "boilerplate_caption"  # "click here", "image", "logo"
    NON_ENGLISH_CAPTION = "non_english_caption"  # a true caption in de/fr/es/ja/zh
    TOO_SHORT_CAPTION = "too_short_caption"  # one word, e.g. "red"

    # The bytes are not a usable image.
    TOO_SMALL = "too_small"  # both sides under 300 px (e.g. 120 x 96)
    BROKEN_IMAGE = "broken_image"  # random bytes served as image/jpeg or image/png
    TRUNCATED_IMAGE = "truncated_image"  # the first half of a JPEG

    # The transport misbehaves.
    WRONG_CONTENT_TYPE = "wrong_content_type"  # a real image served as text/html
    HTML_AS_IMAGE = "html_as_image"  # an <img> whose src is an HTML page
    NOT_FOUND = "not_found"  # 404
    SLOW_RESPONSE = "slow_response"  # answered after `slow_delay_s` seconds
    REDIRECT_CHAIN = "redirect_chain"  # 2-3 302 hops ending at a real image
    REDIRECT_LOOP = "redirect_loop"  # 302 hops that never end

    # The image is a copy of another one on the site.
    EXACT_DUPLICATE = "exact_duplicate"  # the same bytes under another URL
    NEAR_DUPLICATE = "near_duplicate"  # re-encoded, resized or slightly cropped

    # The publisher opted out.
    X_ROBOTS_NOAI = "x_robots_noai"  # X-Robots-Tag: noai
    X_ROBOTS_NOIMAGEAI = "x_robots_noimageai"  # X-Robots-Tag: noimageai
    ROBOTS_DISALLOWED = "robots_disallowed"  # under a path robots.txt disallows

    # The image is not a photograph of a scene fit for the dataset (its caption is true).
    NON_NATURAL_IMAGE = "non_natural_image"  # a chart, screenshot, slide, logo or text banner
    WATERMARKED_IMAGE = "watermarked_image"  # a scene under a translucent text or logo mark

    # Markup an extractor should skip rather than offer as a candidate.
    DATA_URI = "data_uri"  # <img src="data:image/png;base64,...">
    TRACKING_PIXEL = "tracking_pixel"  # a 1x1 GIF with width=1 height=1
    ICON = "icon"  # a favicon or a 16-24 px UI icon


CAPTION_NOISE: frozenset[NoiseKind] = frozenset(
    {
        NoiseKind.MISMATCHED_CAPTION,
        NoiseKind.FILENAME_CAPTION,
        NoiseKind.BOILERPLATE_CAPTION,
        NoiseKind.NON_ENGLISH_CAPTION,
        NoiseKind.TOO_SHORT_CAPTION,
    }
)

MARKUP_NOISE: frozenset[NoiseKind] = frozenset(
    {NoiseKind.DATA_URI, NoiseKind.TRACKING_PIXEL, NoiseKind.ICON}
)

# What the content filters (heads on the CLIP image embedding) target.
CONTENT_NOISE: frozenset[NoiseKind] = frozenset(
    {NoiseKind.NON_NATURAL_IMAGE, NoiseKind.WATERMARKED_IMAGE}
)
