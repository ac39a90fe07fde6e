"""Resolve the URL text found in a page or a list into an absolute, canonical http(s) URL.

Every candidate URL (page images, followed links, list rows, WAT records) is made here, so
the record key (a hash of url + caption) and URL dedupe see one spelling per resource:
`HTTP://A.com:80/x#top` and `http://a.com/x` are one URL.

The canonical form changes only what RFC 3986 §6.2.2-6.2.3 call equivalent, so it is also
the URL we fetch (and the one the fetcher's address checks run on):

- scheme and host lower-cased; a host's trailing dot dropped; Unicode hosts to IDNA 2008
  (UTS 46) ASCII, as url-normalize's `normalize_host` does; empty labels (`a..b`) refused;
- the default port (80 for http, 443 for https) dropped, leading zeros of a port dropped;
- percent-encoding normalised: hex digits upper-cased, escapes of unreserved characters
  (`%7E`, `%41`) decoded, escapes of reserved ones (`%2F`, `%26`, `%3D`) kept, anything
  that may not appear raw (non-ASCII, `"`, `<`, `|`, a stray `%`) escaped as UTF-8;
- dot segments (`/a/../b`) resolved; an empty path becomes `/`;
- the fragment dropped (it never reaches the server);
- the query kept byte for byte in its own order, empty parameters and `+` included: a
  server may read `?b=1&a=2` and `?a=2&b=1` differently, so sorting (w3lib's
  `canonicalize_url`) could fetch another image. Two orders of one query stay two URLs.
- repeated slashes (`//img`) kept: url-normalize's `url_normalize` collapses them (and
  `&&`, and NFC-normalises the path), which can name another file, so only its host and
  port pieces are used here.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit, urlunsplit

from url_normalize.normalize_host import normalize_host
from url_normalize.normalize_port import normalize_port

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
    """The canonical absolute http(s) URL for `raw` relative to `base` (see the module doc).

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
    return _canonical(parts.scheme, parts.netloc, parts.path, parts.query)


# Characters that stand for themselves in a path or query (RFC 3986 unreserved + sub-delims
# + ":@/?[]", the set the fetcher's `parse_target` leaves raw, so it sends this URL as is).
_PLAIN = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?\[\]]*")
_ASCII_HOST = re.compile(r"(?!xn--)[A-Za-z0-9-]+(?:\.(?!xn--)[A-Za-z0-9-]+)*\.?")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def canonical_url(url: str) -> str:
    """The canonical form of an absolute http(s) URL (see the module doc); idempotent."""
    return resolve_http_url(url)


def _canonical(scheme: str, netloc: str, path: str, query: str) -> str:
    userinfo, at, host_port = netloc.rpartition("@")
    if host_port.startswith("["):
        host, _, port = host_port.partition("]")
        host += "]"
        port = port.removeprefix(":")
    else:
        host, _, port = host_port.partition(":")
    if any(not label for label in host.rstrip(".").split(".")):
        raise InvalidUrlError(f"malformed host {host!r}: empty label")
    try:
        # A plain ASCII name needs only lower-casing; IDNA processing is the slow part.
        plain = _ASCII_HOST.fullmatch(host)
        host = host.lower().rstrip(".") if plain else normalize_host(host)
    except UnicodeError as error:
        raise InvalidUrlError(f"host {host!r} is not a valid domain name: {error}") from error
    port = normalize_port(port, scheme)
    netloc = f"{userinfo}{at}{host}" + (f":{port}" if port else "")
    path = _remove_dot_segments(_normalise_escapes(path)) or "/"
    return urlunsplit((scheme, netloc, path, _normalise_escapes(query), ""))


def _normalise_escapes(text: str) -> str:
    """`text` with RFC 3986 §6.2.2.1-2 percent-encoding normalisation, nothing else changed."""
    if "%" not in text and _PLAIN.fullmatch(text):
        return text
    out: list[str] = []
    last = 0
    for match in _ESCAPE.finditer(text):
        out.append(_escape_raw(text[last : match.start()]))
        char = chr(int(match.group(1), 16))
        out.append(char if char in _UNRESERVED else "%" + match.group(1).upper())
        last = match.end()
    out.append(_escape_raw(text[last:]))
    return "".join(out)


def _escape_raw(text: str) -> str:
    """Escape what may not appear raw (a stray `%` included), as UTF-8 bytes."""
    if _PLAIN.fullmatch(text):
        return text
    return "".join(
        c
        if _PLAIN.fullmatch(c)
        else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
        for c in text
    )


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path; empty segments (`//`) are kept."""
    if "." not in path:
        return path
    segments = path.split("/")
    if not any(s in (".", "..") for s in segments):
        return path
    out: list[str] = []
    for segment in segments[1:]:
        if segment == ".":
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    if segments[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out)
