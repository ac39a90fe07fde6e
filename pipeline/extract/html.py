"""Find image-text candidates and outgoing links in an HTML page.

Pure Python on the standard library's `html.parser`, which tolerates any markup: unclosed
tags, stray end tags, truncated documents, binary junk. The tree is not built; a stack of
open elements is kept with the implied end tags that matter for text context (`<p>`,
`<li>`, table cells), and the page's visible text goes into one whitespace-normalised
buffer so that "the text near an image" is a slice of it.
"""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser

from lait.record import Record
from lait.urls import InvalidUrlError, resolve_http_url
from pipeline.extract.candidates import ImageSighting, records_for_page
from pipeline.extract.charset import decode_html
from pipeline.extract.image_screening import (
    is_placeholder_url,
    parse_dimension,
    style_dimensions,
)
from pipeline.extract.srcset import largest_srcset_url

# The longest SURROUNDING caption: a window of the enclosing block's text around the image.
MAX_SURROUNDING_CHARS = 300
# Deeper nesting than this is junk markup; extra levels are not tracked (keeps parsing linear).
MAX_OPEN_ELEMENTS = 512
# `<meta name=... content=...>` pairs kept per page (robots directives are read from them).
MAX_META_TAGS = 256

# Lazy-load attributes, most specific first; they win over `src`, which is then a
# placeholder or a low-quality preview.
_LAZY_SRCSET_ATTRS = ("data-srcset", "data-lazy-srcset")
_LAZY_SRC_ATTRS = ("data-src", "data-lazy-src", "data-original", "data-lazy", "data-original-src")

# fmt: off
_VOID_TAGS = frozenset(
    {
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
        "param", "source", "track", "wbr", "keygen", "image",
    }
)
# Elements whose text is context for the images inside them.
_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "caption", "center", "dd", "details",
        "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2",
        "h3", "h4", "h5", "h6", "header", "li", "main", "nav", "ol", "p", "pre", "section",
        "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul", "body", "html",
    }
)
# fmt: on
# The page-wide containers are blocks for spacing but too broad to be an image's context.
_NOT_CONTEXT = frozenset(
    {"body", "html", "table", "tbody", "thead", "tfoot", "tr", "ul", "ol", "dl"}
)
# Text inside these is not visible page text.
_HIDDEN_TAGS = frozenset({"script", "style", "template", "title", "noscript"})
# Start tags that close an open element implicitly, when it is the innermost block.
_IMPLIED_END: dict[str, frozenset[str]] = {
    "li": frozenset({"li"}),
    "dt": frozenset({"dt", "dd"}),
    "dd": frozenset({"dt", "dd"}),
    "td": frozenset({"td", "th"}),
    "th": frozenset({"td", "th"}),
    "tr": frozenset({"td", "th", "tr"}),
}
# `<![` sections other than CDATA and IE conditionals make the stdlib parser raise.
_BAD_MARKED_SECTION = re.compile(r"<!\[(?!CDATA\[|(?:if|endif|else)\b)", re.IGNORECASE)


@dataclasses.dataclass(frozen=True, slots=True)
class PageExtraction:
    """What one page yields: its image records, its outgoing links, and how it was read."""

    records: list[Record]
    links: list[str]
    encoding: str
    parse_error: str | None = None
    # The page's `<meta name content>` pairs (name lower-cased), in page order, at most
    # MAX_META_TAGS: where `<meta name="robots" content="noai">` is read from.
    meta: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(slots=True)
class _TextSpan:
    """A range of the page's text buffer: an element's text."""

    start: int
    end: int | None = None


@dataclasses.dataclass(slots=True)
class _Figure:
    captions: list[_TextSpan] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(slots=True)
class _Picture:
    srcsets: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(slots=True)
class _Open:
    tag: str
    span: _TextSpan | None = None
    figure: _Figure | None = None
    picture: _Picture | None = None


@dataclasses.dataclass(slots=True)
class _FoundImage:
    raw_url: str | None
    alt: str
    title: str
    width: int | None
    height: int | None
    css_class: str
    at: int
    block: _TextSpan | None
    figure: _Figure | None


def _choose_image_url(attrs: dict[str, str], picture: _Picture | None) -> str | None:
    """The URL text of the best image an `<img>` offers (see module docs for the order)."""
    offered: list[str] = []
    for name in _LAZY_SRCSET_ATTRS:
        if attrs.get(name):
            offered.append(largest_srcset_url(attrs[name]) or "")
    offered.extend(attrs.get(name, "") for name in _LAZY_SRC_ATTRS)
    if attrs.get("srcset"):
        offered.append(largest_srcset_url(attrs["srcset"]) or "")
    if picture is not None:
        offered.extend(largest_srcset_url(srcset) or "" for srcset in picture.srcsets)
    offered.append(attrs.get("src", ""))
    offered = [url.strip() for url in offered if url and url.strip()]
    for url in offered:
        if not is_placeholder_url(url):
            return url
    return offered[0] if offered else None


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base_href: str | None = None
        self.images: list[_FoundImage] = []
        self.hrefs: list[str] = []
        self.meta: list[tuple[str, str]] = []
        self._chunks: list[str] = []
        self._length = 0
        self._pending_space = False
        self._stack: list[_Open] = []
        self._hidden = 0

    # -- text buffer --------------------------------------------------------------------

    @property
    def text(self) -> str:
        return "".join(self._chunks)

    def _append_text(self, data: str) -> None:
        words = data.split()
        if not words:
            self._pending_space = self._pending_space or bool(data)
            return
        if self._length and (self._pending_space or data[0].isspace()):
            self._chunks.append(" ")
            self._length += 1
        piece = " ".join(words)
        self._chunks.append(piece)
        self._length += len(piece)
        self._pending_space = data[-1].isspace()

    # -- element stack ------------------------------------------------------------------

    def _innermost(self, tags: frozenset[str]) -> int | None:
        for index in range(len(self._stack) - 1, -1, -1):
            tag = self._stack[index].tag
            if tag in tags:
                return index
            if tag in _BLOCK_TAGS:
                return None
        return None

    def _pop_to(self, index: int) -> None:
        while len(self._stack) > index:
            element = self._stack.pop()
            if element.span is not None:
                element.span.end = self._length
            if element.tag in _HIDDEN_TAGS:
                self._hidden -= 1
            if element.tag in _BLOCK_TAGS:
                self._pending_space = True

    def _nearest(self, attribute: str) -> object | None:
        for element in reversed(self._stack):
            value = getattr(element, attribute)
            if value is not None:
                return value
        return None

    def _push(self, tag: str) -> _Open:
        element = _Open(tag)
        if tag in _BLOCK_TAGS:
            self._pending_space = True
            if tag not in _NOT_CONTEXT:
                element.span = _TextSpan(self._length)
        if tag == "figure":
            element.figure = _Figure()
        elif tag == "figcaption" and element.span is not None:
            figure = self._nearest("figure")
            if isinstance(figure, _Figure):
                figure.captions.append(element.span)
        elif tag == "picture":
            element.picture = _Picture()
        if tag in _HIDDEN_TAGS:
            self._hidden += 1
        if len(self._stack) < MAX_OPEN_ELEMENTS:
            self._stack.append(element)
        elif element.tag in _HIDDEN_TAGS:
            self._hidden -= 1
        return element

    # -- HTMLParser callbacks -----------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values: dict[str, str] = {}
        for name, value in attrs:
            values.setdefault(name, value or "")  # a repeated attribute is ignored, as in browsers
        if tag == "img":
            self._on_img(values)
        elif tag in ("a", "area") and values.get("href"):
            self.hrefs.append(values["href"])
        elif tag == "base" and self.base_href is None and values.get("href"):
            self.base_href = values["href"]
        elif tag == "source" and values.get("srcset"):
            picture = self._nearest("picture")
            if isinstance(picture, _Picture):
                picture.srcsets.append(values["srcset"])
        elif tag == "br":
            self._pending_space = True
        elif tag == "meta" and values.get("name") and len(self.meta) < MAX_META_TAGS:
            self.meta.append((values["name"].strip().lower(), values.get("content", "")))
        if tag in _VOID_TAGS:
            return
        if tag in _BLOCK_TAGS:
            closes = _IMPLIED_END.get(tag, frozenset()) | {"p"}
            while (implied := self._innermost(closes)) is not None:
                self._pop_to(implied)
        self._push(tag)

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self._stack) - 1, -1, -1):
            if self._stack[index].tag == tag:
                self._pop_to(index)
                return
        if tag in _BLOCK_TAGS or tag == "br":
            self._pending_space = True

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self._append_text(data)

    def _on_img(self, attrs: dict[str, str]) -> None:
        style_width, style_height = style_dimensions(attrs.get("style"))
        width = parse_dimension(attrs.get("width"))
        height = parse_dimension(attrs.get("height"))
        block = None
        for element in reversed(self._stack):
            if element.span is not None:
                block = element.span
                break
        figure = self._nearest("figure")
        picture = self._nearest("picture")
        self.images.append(
            _FoundImage(
                raw_url=_choose_image_url(
                    attrs, picture if isinstance(picture, _Picture) else None
                ),
                alt=attrs.get("alt", ""),
                title=attrs.get("title", ""),
                width=width if width is not None else style_width,
                height=height if height is not None else style_height,
                css_class=attrs.get("class", ""),
                at=self._length,
                block=block,
                figure=figure if isinstance(figure, _Figure) else None,
            )
        )

    def finish(self) -> None:
        self._pop_to(0)


def _bounded_window(text: str, span: _TextSpan, at: int) -> str:
    """The span's text, or at most MAX_SURROUNDING_CHARS of it centred on `at`, cut at words."""
    start, end = span.start, span.end if span.end is not None else len(text)
    if end - start <= MAX_SURROUNDING_CHARS:
        return text[start:end].strip()
    low = max(start, min(at - MAX_SURROUNDING_CHARS // 2, end - MAX_SURROUNDING_CHARS))
    high = low + MAX_SURROUNDING_CHARS
    window = text[low:high]
    if low > start and not text[low - 1].isspace() and " " in window:
        window = window.split(" ", 1)[1]
    if high < end and not text[high].isspace() and " " in window:
        window = window.rsplit(" ", 1)[0]
    return window.strip()


def _surrounding_text(text: str, image: _FoundImage) -> str:
    if image.figure is not None and image.figure.captions:
        caption = " ".join(
            text[span.start : span.end if span.end is not None else len(text)].strip()
            for span in image.figure.captions
        ).strip()
        if caption:
            return _bounded_window(caption, _TextSpan(0, len(caption)), 0)
    if image.block is None:
        return ""
    return _bounded_window(text, image.block, image.at)


def _parse(document: str) -> tuple[_PageParser, str | None]:
    parser = _PageParser()
    parse_error = None
    try:
        # Browsers read such a section as a bogus comment; "<!" makes the parser do the same.
        parser.feed(_BAD_MARKED_SECTION.sub("<!", document))
        parser.close()
    except (AssertionError, ValueError, IndexError) as error:
        # The stdlib parser raises on a few malformed declarations; keep what was parsed.
        parse_error = f"{type(error).__name__}: {error}"
    parser.finish()
    return parser, parse_error


def page_sightings(parser: _PageParser) -> list[ImageSighting]:
    """A parsed page's images as sightings: raw URL, alt, title, surrounding text, size."""
    text = parser.text
    return [
        ImageSighting(
            raw_url=image.raw_url,
            alt=image.alt,
            title=image.title,
            surrounding=_surrounding_text(text, image),
            width=image.width,
            height=image.height,
            css_class=image.css_class,
        )
        for image in parser.images
    ]


def _base_url(page_url: str, base_href: str | None) -> str:
    if base_href:
        try:
            return resolve_http_url(base_href, page_url)
        except InvalidUrlError:
            pass  # an unusable <base> is ignored, as browsers do
    return page_url


def _resolved_links(hrefs: list[str], base_url: str) -> list[str]:
    links: dict[str, None] = {}
    for href in hrefs:
        try:
            links.setdefault(resolve_http_url(href, base_url))
        except InvalidUrlError:
            continue  # mailto:, javascript:, tel: and junk are not pages to follow
    return list(links)


def extract_page(
    html: bytes,
    page_url: str,
    *,
    source: str,
    headers_charset: str | None = None,
    where: str | None = None,
) -> PageExtraction:
    """Image records and outgoing links of one page, from a single parse.

    `headers_charset` is the charset (or whole Content-Type) of the HTTP response; `where`
    names this sighting of the page for the records' sighting ids (default `page_url`).
    """
    document, encoding = decode_html(html, headers_charset)
    parser, parse_error = _parse(document)
    base_url = _base_url(page_url, parser.base_href)
    sightings = page_sightings(parser)
    records = records_for_page(
        sightings, page_url=page_url, base_url=base_url, source=source, where=where
    )
    links = _resolved_links(parser.hrefs, base_url)
    return PageExtraction(records, links, encoding, parse_error, tuple(parser.meta))


def extract_candidates(
    html: bytes,
    page_url: str,
    *,
    source: str,
    headers_charset: str | None = None,
    where: str | None = None,
) -> list[Record]:
    """Every (image URL, caption) pair of a page as a record: a candidate, or rejected.

    Captions come from `alt` (ALT), `title` (TITLE) and the `<figcaption>` of the enclosing
    `<figure>` or else a window of at most 300 characters of the enclosing block's text
    (SURROUNDING). Data URIs, tracking pixels, icons, images without any caption and
    unusable URLs come back rejected with their reason, so nothing is lost. Keys are
    unique within the page.
    """
    return extract_page(
        html, page_url, source=source, headers_charset=headers_charset, where=where
    ).records


def extract_links(html: bytes, page_url: str, *, headers_charset: str | None = None) -> list[str]:
    """Absolute http(s) URLs of the page's `<a href>` and `<area href>`, fragment removed.

    In page order, each once; `<base href>` is respected. Choosing which to follow (same
    site, robots) is the caller's business.
    """
    document, _ = decode_html(html, headers_charset)
    parser, _ = _parse(document)
    return _resolved_links(parser.hrefs, _base_url(page_url, parser.base_href))
