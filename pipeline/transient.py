"""Which fetch rejects may succeed if tried again later (what `--retry-failed` refetches).

A timeout, a refused or reset connection, a 5xx and a 429 (Too Many Requests) say more about
the moment than about the image; a 404, a wrong content type, an opt-out or a blocked address
do not change on a second try. A 429 is ledgered as `http_client_error` with the detail
`HTTP 429 Too Many Requests` (the fetcher's wording), so it is told from other 4xx by that.
"""

from __future__ import annotations

from lait.record import RejectReason

TRANSIENT_REASONS = frozenset(
    {RejectReason.TIMEOUT, RejectReason.CONNECTION_ERROR, RejectReason.HTTP_SERVER_ERROR}
)
TOO_MANY_REQUESTS_DETAIL = "HTTP 429"
# Answers in a transient reason's class that do not heal: a bad certificate, a body whose
# Content-Encoding does not decode (the fetcher does not retry these either).
_LASTING_DETAILS = ("TLS failed", "undecodable Content-Encoding")


def is_transient_failure(reason: RejectReason | str | None, detail: str | None) -> bool:
    """Whether a reject with this reason and detail is worth fetching again."""
    if reason is None:
        return False
    reason = RejectReason(reason)
    if reason in TRANSIENT_REASONS:
        return not (detail or "").startswith(_LASTING_DETAILS)
    return reason is RejectReason.HTTP_CLIENT_ERROR and (detail or "").startswith(
        TOO_MANY_REQUESTS_DETAIL
    )
