"""The fetcher's one failure type: a refusal that carries a `RejectReason`."""

from __future__ import annotations

from lait.record import RejectReason


class FetchRejected(Exception):
    """A URL could not (or must not) be fetched; `reason` is what the rejects ledger records.

    Attributes:
        reason: the fetch-stage `RejectReason`.
        detail: a short human-readable explanation (status code, address, limit hit).
        url: the URL whose fetch was refused (the hop that failed, for redirects).
        value, limit: the measure and the cap it broke, where the refusal is a comparison
            (bytes over `max_bytes`, redirects over `max_redirects`); else None.
    """

    def __init__(
        self,
        reason: RejectReason,
        detail: str,
        url: str,
        value: float | None = None,
        limit: float | None = None,
    ) -> None:
        super().__init__(f"{reason.value}: {detail} ({url})")
        self.reason = reason
        self.detail = detail
        self.url = url
        self.value = value
        self.limit = limit

    def __reduce__(
        self,
    ) -> tuple[type[FetchRejected], tuple[RejectReason, str, str, float | None, float | None]]:
        # Keep the exception picklable (Beam may ship it between processes).
        return (FetchRejected, (self.reason, self.detail, self.url, self.value, self.limit))
