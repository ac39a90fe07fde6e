"""What a dedupe stage decides about a record: drop it, why, and in favour of whom."""

from __future__ import annotations

from typing import NamedTuple

from lait.record import RejectReason


class Decision(NamedTuple):
    """Drop the record with this key for `reason`; `survivor` is the key it duplicates."""

    reason: RejectReason
    survivor: str | None
    detail: str
