"""What a successful fetch returns."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class FetchResponse:
    """A fully read 2xx response.

    Attributes:
        url: the final URL, after redirects.
        status: the HTTP status code (2xx).
        content_type: the media type, lower-cased, without parameters ("" when absent).
        headers: response headers with lower-cased names (repeated headers joined by ", ").
        body: the body, after content decoding, at most `FetchConfig.max_bytes` long.
        redirects: the URLs that redirected, in order (empty when there were none).
        elapsed_s: seconds from the call to `fetch` to the last body byte, retries included.
    """

    url: str
    status: int
    content_type: str
    headers: dict[str, str]
    body: bytes = dataclasses.field(repr=False)
    redirects: tuple[str, ...]
    elapsed_s: float
