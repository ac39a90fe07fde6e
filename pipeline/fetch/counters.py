"""Thread-safe counters a caller can read and turn into Beam Metrics."""

from __future__ import annotations

import threading
from collections import Counter


class FetchCounters:
    """Named integer counters, safe to bump from many threads."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, name: str, amount: int = 1) -> None:
        """Add `amount` to counter `name`."""
        with self._lock:
            self._counts[name] += amount

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._counts)
