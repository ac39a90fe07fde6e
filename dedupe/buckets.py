"""Inside one LSH bucket: which members are close, as a spanning forest of edges.

A bucket of m members is compared all-pairs, block by block (bounded memory), and only the
edges that join two not-yet-joined members are emitted (at most m - 1), so a bucket of a
thousand copies of one image yields a thousand edges, not half a million.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

CloseFn = Callable[[slice, slice], np.ndarray]
"""close(rows, cols) -> bool matrix: whether member rows[i] is close to member cols[j]."""


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, i: int, j: int) -> bool:
        """Join the sets of i and j; False if they were already one."""
        a, b = self.find(i), self.find(j)
        if a == b:
            return False
        self.parent[max(a, b)] = min(a, b)
        return True


def spanning_edges(n: int, close: CloseFn, block: int) -> Iterator[tuple[int, int]]:
    """(i, j) pairs, i < j, forming a spanning forest of the "close" graph on n members."""
    forest = UnionFind(n)
    for start in range(0, n, block):
        rows = slice(start, min(n, start + block))
        for col_start in range(start, n, block):
            cols = slice(col_start, min(n, col_start + block))
            matrix = close(rows, cols)
            ii, jj = np.nonzero(matrix)
            for i, j in zip((ii + rows.start).tolist(), (jj + cols.start).tolist(), strict=True):
                if i < j and forest.union(i, j):
                    yield i, j


def hamming_close(
    hashes: np.ndarray,
    threshold: int,
    thumbnails: np.ndarray | None = None,
    colour_threshold: float | None = None,
) -> CloseFn:
    """Closeness by pHash Hamming distance, then (where both have one) colour thumbnails.

    `hashes` is uint64 (n,); `thumbnails` int16 (n, 192) with rows of -1 where a member has
    no thumbnail (then the pHash alone decides).
    """

    def close(rows: slice, cols: slice) -> np.ndarray:
        distance = np.bitwise_count(hashes[rows, None] ^ hashes[None, cols])
        matrix: np.ndarray = distance <= threshold
        if thumbnails is None or colour_threshold is None:
            return matrix
        ii, jj = np.nonzero(matrix)
        if len(ii) == 0:
            return matrix
        left, right = thumbnails[rows][ii], thumbnails[cols][jj]
        known = (left[:, 0] >= 0) & (right[:, 0] >= 0)
        colour = np.abs(left - right).mean(axis=1)
        matrix[ii, jj] = ~known | (colour <= colour_threshold)
        return matrix

    return close


def thumbnail_matrix(thumbnails: list[bytes | None]) -> np.ndarray | None:
    """Stack thumbnails as int16 rows (-1 rows for missing ones); None if none is known."""
    if all(t is None for t in thumbnails):
        return None
    out = np.full((len(thumbnails), 192), -1, dtype=np.int16)
    for i, thumbnail in enumerate(thumbnails):
        if thumbnail is not None:
            out[i] = np.frombuffer(thumbnail, dtype=np.uint8)
    return out
