"""Parsing a URL into what the fetcher needs to vet, pin and request it."""

from __future__ import annotations

import dataclasses
import urllib.parse

from pipeline.fetch.addresses import parse_ip

SUPPORTED_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters left as they are when re-quoting a path: RFC 3986 reserved + unreserved + "%".
_SAFE_PATH_CHARS = "/?#[]@!$&'()*+,;=:-._~%"


class UnsupportedScheme(Exception):
    """The URL's scheme is not http or https."""


class InvalidUrl(Exception):
    """The URL cannot be parsed into a host, a port and a path."""


@dataclasses.dataclass(frozen=True)
class Target:
    """One URL, split and normalised for a request.

    Attributes:
        url: the URL without its fragment (what redirect-loop detection compares).
        scheme: "http" or "https".
        host: the host, lower-cased, IDNA-encoded, without brackets.
        port: the explicit or default port.
        path: the request target (path and query), percent-encoded.
        host_header: the value of the Host header ("name" or "name:port").
    """

    url: str
    scheme: str
    host: str
    port: int
    path: str
    host_header: str

    @property
    def origin(self) -> tuple[str, str, int]:
        """(scheme, host, port): the key robots.txt and connection pools are cached by."""
        return (self.scheme, self.host, self.port)


def parse_target(url: str) -> Target:
    """Split `url`; raise `UnsupportedScheme` or `InvalidUrl` when it cannot be fetched."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in SUPPORTED_SCHEMES:
            if not scheme:
                raise InvalidUrl("no scheme")
            raise UnsupportedScheme(f"scheme {scheme!r} is not http or https")
        raw_host = parts.hostname  # lower-cased, brackets stripped
        explicit_port = parts.port  # raises ValueError for a bad port
    except ValueError as err:
        raise InvalidUrl(str(err)) from err
    if not raw_host:
        raise InvalidUrl("no host")
    host = _ascii_host(raw_host)
    port = explicit_port if explicit_port is not None else _DEFAULT_PORTS[scheme]
    path = urllib.parse.quote(parts.path or "/", safe=_SAFE_PATH_CHARS)
    if parts.query:
        path += "?" + urllib.parse.quote(parts.query, safe=_SAFE_PATH_CHARS)
    shown_host = f"[{host}]" if ":" in host else host
    host_header = (
        shown_host if explicit_port in (None, _DEFAULT_PORTS[scheme]) else (f"{shown_host}:{port}")
    )
    netloc = shown_host if explicit_port is None else f"{shown_host}:{explicit_port}"
    normalised = urllib.parse.urlunsplit((scheme, netloc, path.split("?", 1)[0], parts.query, ""))
    return Target(
        url=normalised, scheme=scheme, host=host, port=port, path=path, host_header=host_header
    )


def _ascii_host(host: str) -> str:
    """`host` as the ASCII form sent in DNS and the Host header (IDNA for Unicode names)."""
    host = host.rstrip(".") if host.endswith(".") and len(host) > 1 else host
    if parse_ip(host) is not None:
        return host
    if any(c in host for c in " /\\@\r\n\t") or host.startswith("."):
        raise InvalidUrl(f"malformed host {host!r}")
    try:
        encoded = host.encode("idna").decode("ascii")
    except UnicodeError as err:
        raise InvalidUrl(f"host {host!r} is not a valid domain name: {err}") from err
    return encoded.lower()


def politeness_key(url: str) -> str:
    """The host a fetch of `url` is polite to: lower-cased, with ":port" when not the default.

    Fetches sharing this key share one host's concurrency and rate budget (the graph groups
    them by it, job-wide). A URL that cannot be parsed gets "", so it still has a key (its
    fetch is rejected as `INVALID_URL` / `UNSUPPORTED_SCHEME` by the fetcher).
    """
    try:
        target = parse_target(url)
    except (InvalidUrl, UnsupportedScheme):
        return ""
    shown_host = f"[{target.host}]" if ":" in target.host else target.host
    if target.port == _DEFAULT_PORTS[target.scheme]:
        return shown_host
    return f"{shown_host}:{target.port}"


def join_location(base: str, location: str) -> str:
    """The absolute URL a redirect's Location points to, relative to `base`."""
    return urllib.parse.urljoin(base, location.strip())
