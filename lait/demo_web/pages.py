"""HTML for the demo web's gallery pages and index, in the variety real pages have.

Pages are written as text and encoded in their declared charset (with characters the charset
lacks as numeric character references, so any HTML parser recovers the exact text). A
malformed page leaves wrapper `<div>`s, paragraphs and list items unclosed, writes some tags
in upper case with unquoted attribute values, and never closes `<body>`: every parser still
sees the same images and captions.
"""

from __future__ import annotations

import html
import random
import re
from dataclasses import dataclass

FILLER_EN: tuple[str, ...] = (
    "Our gallery collects simple shapes drawn in flat colours.",
    "Each picture was made for a small study of how people describe what they see.",
    "Photos are shared under an open licence; please credit the gallery.",
    "New pictures are added every week, so check back soon.",
    "Some of these shapes were suggested by visitors to the site.",
    "We keep the backgrounds plain so the shapes stand out.",
    "Scroll down to see more pictures from this collection.",
    "Thanks to everyone who sent in their favourite colours this month.",
    "The pictures below are arranged in the order they were uploaded.",
    "If you spot a mistake in a description, let us know.",
)

# windows-1252 filler: curly quotes, an en dash, accents and a euro sign, all outside ASCII.
FILLER_CP1252: tuple[str, ...] = (
    "Welcome to the “Café des Formes” collection – shapes from our Paris studio.",
    "Prints cost €12 each; the photographer’s notes are below.",
    "Größer oder kleiner? Visitors from Zürich voted on every picture.",
)

FILLER_JA: tuple[str, ...] = (
    "このページでは、シンプルな図形の写真を紹介します。",
    "背景は無地なので、図形がよく見えます。",
    "新しい写真は毎週追加されます。",
)

_UNQUOTED_OK = re.compile(r"^[^\s\"'=<>`]+$")


@dataclass(frozen=True)
class ImageItem:
    """One `<img>` and what surrounds it.

    `attributes` are written in order. `caption_element` is "figcaption" (the image sits in
    a `<figure>`), "p" (a caption paragraph right after the image, in a `<div>`) or None
    (the image alone in a `<div>`, its caption if any in its attributes).
    """

    attributes: tuple[tuple[str, str], ...]
    caption_element: str | None = None
    caption_text: str | None = None
    css_class: str = "photo"


@dataclass(frozen=True)
class PageLayout:
    """How one gallery page is written."""

    path: str
    title: str
    charset: str  # as declared: utf-8, windows-1252 or Shift_JIS
    base_href: str | None
    malformed: bool
    links: tuple[tuple[str, str], ...]  # (href, text)
    language: str = "en"


PYTHON_CODECS: dict[str, str] = {
    "utf-8": "utf-8",
    "windows-1252": "cp1252",
    "Shift_JIS": "shift_jis",
}


def _attribute(name: str, value: str, malformed: bool) -> str:
    if malformed and _UNQUOTED_OK.match(value):
        return f"{name.upper()}={value}"
    return f'{name}="{html.escape(value, quote=True)}"'


def _img_tag(item: ImageItem, malformed: bool) -> str:
    attrs = " ".join(_attribute(name, value, malformed) for name, value in item.attributes)
    return f"<{'IMG' if malformed else 'img'} {attrs}>"


def _item_html(item: ImageItem, malformed: bool) -> str:
    img = _img_tag(item, malformed)
    text = html.escape(item.caption_text or "", quote=False)
    if item.caption_element == "figcaption":
        return (
            f'<figure class="{item.css_class}">\n{img}\n<figcaption>{text}</figcaption>\n</figure>'
        )
    if item.caption_element == "p":
        return f'<div class="{item.css_class}">\n{img}\n<p class="caption">{text}</p>\n</div>'
    # Only caption-less wrappers are left open on malformed pages, so no parser can attach
    # a neighbour's caption text to them.
    closing = "" if malformed else "\n</div>"
    return f'<div class="{item.css_class}">\n{img}{closing}'


def _filler(layout: PageLayout, rng: random.Random) -> str:
    if layout.language == "ja":
        pool = FILLER_JA
    elif layout.charset == "windows-1252":
        pool = FILLER_CP1252  # always text that only decodes right as windows-1252
    else:
        pool = FILLER_EN
    return html.escape(rng.choice(pool), quote=False)


def render_page(
    layout: PageLayout,
    items: list[ImageItem],
    header_items: list[ImageItem],
    footer_items: list[ImageItem],
    rng: random.Random,
) -> bytes:
    """The page's bytes in its declared charset.

    `header_items` and `footer_items` (icons, tracking pixels) go outside the gallery.
    """
    malformed = layout.malformed
    p_close = "" if malformed else "</p>"
    lines = ["<!DOCTYPE html>", f'<html lang="{layout.language}">', "<head>"]
    if layout.charset == "Shift_JIS":
        lines.append('<meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">')
    else:
        lines.append(f'<meta charset="{layout.charset}">')
    lines.append(f"<title>{html.escape(layout.title, quote=False)}</title>")
    if layout.base_href is not None:
        lines.append(f'<base href="{layout.base_href}">')
    lines += ['<link rel="icon" href="/favicon.ico">', "</head>", "<body>", "<header>"]
    lines += [_item_html(item, malformed) for item in header_items]
    lines += ['<a href="/index.html">Home</a>', "</header>"]
    lines.append(f"<h1>{html.escape(layout.title, quote=False)}</h1>")
    lines.append(f"<p>{_filler(layout, rng)}{p_close}")
    if malformed:
        lines.append(f"<p><b>{_filler(layout, rng)}</span>")
    lines.append('<main class="gallery">')
    for item in items:
        if rng.random() < 0.3:
            lines.append(f"<p>{_filler(layout, rng)}{p_close}")
        lines.append(_item_html(item, malformed))
    lines.append("</main>")
    lines.append('<nav class="related">\n<ul>')
    li_close = "" if malformed else "</li>"
    for href, text in layout.links:
        lines.append(f'<li><a href="{html.escape(href)}">{html.escape(text)}</a>{li_close}')
    lines.append("</ul>\n</nav>")
    lines += [_item_html(item, malformed) for item in footer_items]
    if not malformed:
        lines += ["</body>", "</html>"]
    text = "\n".join(lines) + "\n"
    return text.encode(PYTHON_CODECS[layout.charset], errors="xmlcharrefreplace")


def render_index(title: str, links: list[tuple[str, str]]) -> bytes:
    """The site's index page: one link per gallery page."""
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        '<link rel="icon" href="/favicon.ico">',
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Galleries of simple shapes, updated weekly.</p>",
        "<ul>",
    ]
    lines += [
        f'<li><a href="{html.escape(href)}">{html.escape(text)}</a></li>' for href, text in links
    ]
    lines += ["</ul>", "</body>", "</html>"]
    return ("\n".join(lines) + "\n").encode("utf-8")


def render_soft_error_page(message: str) -> bytes:
    """A small HTML page, e.g. what a server sends where an image was expected."""
    text = html.escape(message)
    return (
        f"<!DOCTYPE html>\n<html><head><title>{text}</title></head>"
        f"<body><h1>{text}</h1></body></html>\n"
    ).encode()
