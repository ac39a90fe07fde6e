"""Bounded-memory aggregators that the report feeds one Arrow batch at a time.

Each one holds a fixed amount of state however many rows pass through it:
- `Histogram`: counts over fixed bin edges (plus below/above/missing), exact mean/min/max;
- `CategoryCounter`: exact counts while there are at most `capacity` distinct values, then
  it keeps the heaviest ones and says the counts became approximate;
- `Reservoir`: a uniform random sample of rows (bottom-k of seeded random priorities), per
  group if asked, so a rerun with the same seed picks the same rows;
- `SmallestK`: the k rows with the smallest value, e.g. distance to a threshold (ties by key).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclasses.dataclass
class Histogram:
    """Counts of values in fixed bins `[edges[i], edges[i+1])`."""

    edges: list[float]
    counts: list[int] = dataclasses.field(default_factory=list)
    below: int = 0
    above: int = 0
    missing: int = 0
    total: float = 0.0
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        if len(self.edges) < 2 or any(
            b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)
        ):
            raise ValueError("histogram edges must be at least two strictly increasing numbers")
        if not self.counts:
            self.counts = [0] * (len(self.edges) - 1)

    @classmethod
    def linear(cls, low: float, high: float, bins: int) -> Histogram:
        """`bins` equal-width bins from `low` to `high`."""
        return cls(edges=[float(x) for x in np.linspace(low, high, bins + 1)])

    @classmethod
    def logarithmic(cls, low: float, high: float, bins: int) -> Histogram:
        """`bins` bins equally wide on a log scale from `low` to `high` (both > 0)."""
        return cls(edges=[float(x) for x in np.geomspace(low, high, bins + 1)])

    @property
    def count(self) -> int:
        """Values seen (missing ones excluded)."""
        return sum(self.counts) + self.below + self.above

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def add(self, values: pa.Array | pa.ChunkedArray | np.ndarray) -> None:
        """Count a batch of values; nulls and NaNs count as missing."""
        if isinstance(values, pa.Array | pa.ChunkedArray):
            self.missing += values.null_count
            array = values.drop_null().to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            array = np.asarray(values, dtype=np.float64)
        nan = np.isnan(array)
        self.missing += int(nan.sum())
        array = array[~nan]
        if array.size == 0:
            return
        self.total += float(array.sum())
        low, high = float(array.min()), float(array.max())
        self.minimum = low if self.minimum is None else min(self.minimum, low)
        self.maximum = high if self.maximum is None else max(self.maximum, high)
        index = np.searchsorted(np.asarray(self.edges), array, side="right") - 1
        nbins = len(self.counts)
        self.below += int((index < 0).sum())
        self.above += int((index >= nbins).sum())
        inside = np.bincount(index[(index >= 0) & (index < nbins)], minlength=nbins)
        self.counts = [a + int(b) for a, b in zip(self.counts, inside, strict=True)]

    def quantile(self, q: float) -> float | None:
        """The q-quantile, interpolated within its bin (exact to within one bin width)."""
        if not self.count:
            return None
        target = q * self.count
        seen = self.below
        if target <= seen:
            return self.minimum
        for i, n in enumerate(self.counts):
            if n and seen + n >= target:
                low, high = self.edges[i], self.edges[i + 1]
                value = low + (high - low) * (target - seen) / n
                assert self.minimum is not None and self.maximum is not None
                return min(max(value, self.minimum), self.maximum)
            seen += n
        return self.maximum

    def summary(self) -> dict[str, float | int | None]:
        """n, missing, mean, min, median, p5, p95, max (JSON-ready)."""
        return {
            "n": self.count,
            "missing": self.missing,
            "mean": self.mean,
            "min": self.minimum,
            "p5": self.quantile(0.05),
            "median": self.quantile(0.5),
            "p95": self.quantile(0.95),
            "max": self.maximum,
        }


@dataclasses.dataclass
class CategoryCounter:
    """Counts per category, bounded to `capacity` distinct categories.

    While fewer than `capacity` distinct values were seen the counts are exact. Beyond that,
    the lightest categories are dropped (their counts are lost), `exact` turns False, and
    the counts that remain are lower bounds.
    """

    capacity: int = 20_000
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    exact: bool = True

    def add(self, values: pa.Array | pa.ChunkedArray, missing_label: str | None = None) -> None:
        """Count a batch of string values; nulls count as `missing_label` (or are skipped)."""
        if missing_label is not None:
            values = values.fill_null(missing_label)
        for item in values.value_counts().to_pylist():
            value = item["values"]
            if value is None:
                continue
            self.counts[value] = self.counts.get(value, 0) + int(item["counts"])
        if len(self.counts) > self.capacity:
            keep = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
            self.counts = dict(keep[: self.capacity // 2])
            self.exact = False

    def top(self, n: int) -> list[tuple[str, int]]:
        """The n largest categories, largest first (ties by name)."""
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


class Reservoir:
    """A uniform sample of at most `size` rows per group, reproducible from `seed`.

    Every row gets a random priority from a seeded generator and the `size` smallest per
    group are kept (bottom-k sampling), which is a uniform sample without replacement and
    works on whole batches at once.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self._rng = np.random.default_rng(seed)
        # group -> list of (priority, row dict)
        self._kept: dict[str, list[tuple[float, dict[str, Any]]]] = {}

    def add(self, batch: pa.Table, groups: Sequence[str] | None = None) -> None:
        """Offer every row of `batch`; `groups` (one per row) samples each group separately."""
        if batch.num_rows == 0 or self.size <= 0:
            return
        priorities = self._rng.random(batch.num_rows)
        if groups is None:
            self._offer("", batch, priorities, np.arange(batch.num_rows))
            return
        labels = np.asarray(groups, dtype=object)
        for group in sorted(set(groups)):
            self._offer(group, batch, priorities, np.flatnonzero(labels == group))

    def _offer(self, group: str, batch: pa.Table, priorities: np.ndarray, rows: Any) -> None:
        kept = self._kept.setdefault(group, [])
        bar = kept[-1][0] if len(kept) >= self.size else math.inf
        rows = rows[priorities[rows] < bar]
        if rows.size > self.size:
            rows = rows[np.argpartition(priorities[rows], self.size - 1)[: self.size]]
        if rows.size == 0:
            return
        taken = batch.take(pa.array(rows)).to_pylist()
        merged = kept + [(float(priorities[r]), row) for r, row in zip(rows, taken, strict=True)]
        merged.sort(key=lambda item: item[0])
        self._kept[group] = merged[: self.size]

    def rows(self, group: str = "") -> list[dict[str, Any]]:
        """The sampled rows of `group`, in priority order (itself random and reproducible)."""
        return [row for _, row in self._kept.get(group, [])]

    def groups(self) -> list[str]:
        return sorted(self._kept)


class SmallestK:
    """The `size` rows with the smallest values (ties broken by the `key` column)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._kept: list[tuple[float, str, dict[str, Any]]] = []

    def add(self, batch: pa.Table, values: pa.Array | pa.ChunkedArray) -> None:
        """Offer every row of `batch`; `values` (one per row, nulls ignored) are compared."""
        if batch.num_rows == 0 or self.size <= 0:
            return
        distance = values.to_numpy(zero_copy_only=False).astype(np.float64)
        candidates = np.flatnonzero(~np.isnan(distance))
        if candidates.size == 0:
            return
        order = pc.sort_indices(
            pa.table(
                {"distance": distance[candidates], "key": batch["key"].take(pa.array(candidates))}
            ),
            sort_keys=[("distance", "ascending"), ("key", "ascending")],
        )
        chosen = candidates[order.to_numpy()[: self.size]]
        taken = batch.take(pa.array(chosen)).to_pylist()
        for index, row in zip(chosen, taken, strict=True):
            self._kept.append((float(distance[index]), str(row.get("key")), row))
        self._kept.sort(key=lambda item: (item[0], item[1]))
        del self._kept[self.size :]

    def rows(self) -> list[dict[str, Any]]:
        """The kept rows, smallest value first."""
        return [row for _, _, row in self._kept]
