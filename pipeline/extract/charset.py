"""Turn the bytes of an HTML page into text, whatever they are.

Order of authority, as browsers do it: a byte-order mark, then the charset of the HTTP
`Content-Type` header, then a `<meta charset>` / `<meta http-equiv="content-type">` in the
first bytes, then UTF-8, then windows-1252. Decoding never raises: bytes a codec cannot
map become U+FFFD.
"""

from __future__ import annotations

import codecs
import re

# How far into the document to look for a <meta> charset declaration. The HTML standard
# says 1024 bytes; real pages put long <head> comments first, so look a little further.
META_PRESCAN_BYTES = 4096

_META_CHARSET = re.compile(
    rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE
)
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)

# WHATWG encoding labels that Python spells differently or that browsers widen: a page
# labelled latin-1 is decoded as windows-1252, Shift_JIS as cp932, and so on.
_LABEL_ALIASES: dict[str, str] = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "ascii": "cp1252",
    "us-ascii": "cp1252",
    "windows-1252": "cp1252",
    "iso-8859-9": "cp1254",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "big5": "big5hkscs",
    "tis-620": "cp874",
    "x-mac-roman": "mac_roman",
}
# Single-byte legacy encodings that servers claim by default even for UTF-8 content.
_LEGACY_DEFAULTS = frozenset({"cp1252", "latin_1", "iso8859-1"})
_UTF16 = frozenset({"utf-16", "utf-16-le", "utf-16-be"})


def normalise_charset(label: str | None) -> str | None:
    """The Python codec name for an HTML/HTTP charset label, or None if it names none.

    Accepts a bare label (``"utf-8"``) or a whole Content-Type value
    (``"text/html; charset=utf-8"``).
    """
    if not label:
        return None
    text = label.strip()
    if "=" in text or ";" in text:
        match = _HEADER_CHARSET.search(text)
        if match is None:
            return None
        text = match.group(1)
    text = text.strip("\"' ").lower()
    text = _LABEL_ALIASES.get(text, text)
    try:
        return codecs.lookup(text).name
    except LookupError:
        return None


def sniff_meta_charset(html: bytes) -> str | None:
    """The codec named by a `<meta>` charset declaration near the top of `html`, if any."""
    match = _META_CHARSET.search(html[:META_PRESCAN_BYTES])
    if match is None:
        return None
    codec = normalise_charset(match.group(1).decode("ascii", "replace"))
    # A <meta> cannot truthfully declare UTF-16: the bytes it was read from are ASCII.
    if codec is not None and codec.replace("_", "-") in _UTF16:
        return "utf-8"
    return codec


def _bom_codec(html: bytes) -> str | None:
    if html.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if html.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return None


def _is_utf8_with_non_ascii(html: bytes) -> bool:
    if html.isascii():
        return False
    try:
        html.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def decode_html(html: bytes, headers_charset: str | None = None) -> tuple[str, str]:
    """Decode an HTML document; return (text, codec used). Never raises on any bytes.

    `headers_charset` is the charset of the HTTP response (a label or a whole
    Content-Type value). When the declared charset is a legacy single-byte default but
    the bytes are valid UTF-8 with non-ASCII characters, UTF-8 wins: mislabelled UTF-8
    is common and valid multi-byte UTF-8 is almost never intended as windows-1252.
    """
    codec = _bom_codec(html)
    if codec is None:
        codec = normalise_charset(headers_charset) or sniff_meta_charset(html)
        if codec in _LEGACY_DEFAULTS and _is_utf8_with_non_ascii(html):
            codec = "utf-8"
    if codec is not None:
        return html.decode(codec, errors="replace"), codec
    try:
        return html.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return html.decode("cp1252", errors="replace"), "cp1252"
