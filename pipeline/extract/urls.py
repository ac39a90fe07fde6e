"""Resolve the URL text found in a page or a list into an absolute http(s) URL."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit, urlunsplit

# Longer URLs are junk (inlined state, broken markup) and break servers and ledgers alike.
MAX_URL_CHARS = 4096
_ALLOWED_SCHEMES = frozenset({"http", "https"})
_URL_NOISE = {ord("\t"): None, ord("\n"): None, ord("\r"): None}


class InvalidUrlError(ValueError):
    """A URL that cannot be used: unparsable, relative without a base, or not http(s)."""


def clean_url_text(raw: str) -> str:
    """URL text as a browser reads it: trimmed, tabs and newlines dropped, spaces escaped."""
    return raw.strip().translate(_URL_NOISE).replace(" ", "%20")


def is_data_uri(raw: str) -> bool:
    """Whether URL text is an inline `data:` URI."""
    return raw.lstrip()[:5].lower() == "data:"


def resolve_http_url(raw: str, base: str | None = None) -> str:
    """The absolute http(s) URL for `raw` relative to `base`, without its fragment.

    Raises InvalidUrlError (with a message fit for a reject detail) when there is none.
    """
    text = clean_url_text(raw)
    if not text:
        raise InvalidUrlError("empty URL")
    if len(text) > MAX_URL_CHARS:
        raise InvalidUrlError(f"URL longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(urljoin(base, text) if base else text)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as error:
        raise InvalidUrlError(f"unparsable URL: {error}") from error
    if parts.scheme not in _ALLOWED_SCHEMES:
        scheme = parts.scheme or "none (relative URL without a base)"
        raise InvalidUrlError(f"unsupported scheme: {scheme}")
    if not parts.hostname:
        raise InvalidUrlError("URL has no host")
    return urlunsplit(parts._replace(fragment=""))
