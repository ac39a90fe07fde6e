"""What a dedupe stage decides about a record: drop it, why, and in favour of whom."""

from __future__ import annotations

from typing import NamedTuple

from lait.record import RejectReason


class Decision(NamedTuple):
    """Drop the record with this key for `reason`; `survivor` is the key it duplicates.

    `value` and `limit` are the measured closeness and the bound it met, where the stage
    measures one (a pair's cosine similarity and the threshold; Hamming bits of a pHash match
    and the most allowed); they go to the ledger's `reject_value` / `reject_limit`.
    """

    reason: RejectReason
    survivor: str | None
    detail: str
    value: float | None = None
    limit: float | None = None


def decision_order(decision: Decision) -> tuple[str, str, str]:
    """A total order on decisions (value/limit may be None, so tuples do not compare)."""
    return (decision.reason.value, decision.survivor or "", decision.detail)
