"""Inside one LSH bucket: which members are close, as a spanning forest of edges.

A bucket of m members is compared all-pairs, block by block, and only a spanning forest of
the close pairs is emitted (at most m - 1 edges), so a bucket of a thousand copies of one
image yields a thousand edges, not half a million. Buckets reach this only up to
`DedupeConfig.bucket_cap` members (see dedupe/perceptual.py for the hot ones).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import minimum_spanning_tree

from dedupe.fingerprint import THUMBNAILS_BYTES, thumbnail_distances

_FEW_PAIRS = 64
CloseFn = Callable[[slice, slice], np.ndarray]
"""close(rows, cols) -> bool matrix: whether member rows[i] is close to member cols[j]."""


def spanning_edges(n: int, close: CloseFn, block: int) -> Iterator[tuple[int, int]]:
    """(i, j) pairs, i < j, forming a spanning forest of the "close" graph on n members.

    The close pairs are found block by block in numpy and the forest is taken in C
    (scipy's minimum spanning tree of the unit-weight graph): no Python loop over pairs, so
    a bucket whose members are all close to each other costs numpy time, not m^2 / 2 steps.
    """
    rows_found, cols_found = [], []
    for start in range(0, n, block):
        rows = slice(start, min(n, start + block))
        for col_start in range(start, n, block):
            cols = slice(col_start, min(n, col_start + block))
            ii, jj = np.nonzero(close(rows, cols))
            ii, jj = ii + rows.start, jj + cols.start
            upper = ii < jj
            rows_found.append(ii[upper].astype(np.int32))
            cols_found.append(jj[upper].astype(np.int32))
    yield from forest_of_pairs(n, np.concatenate(rows_found), np.concatenate(cols_found))


def forest_of_pairs(n: int, ii: np.ndarray, jj: np.ndarray) -> Iterator[tuple[int, int]]:
    """(i, j) pairs, i < j, of a spanning forest of the graph with edges (ii[k], jj[k])."""
    if len(ii) == 0:
        return
    if len(ii) <= _FEW_PAIRS:  # most buckets: a few pairs, cheaper in Python than in scipy
        parent = list(range(n))

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for i, j in zip(ii.tolist(), jj.tolist(), strict=True):
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
                yield i, j
        return
    graph = coo_matrix((np.ones(len(ii), dtype=np.float32), (ii, jj)), shape=(n, n))
    forest = minimum_spanning_tree(graph.tocsr()).tocoo()
    pairs = sorted(zip(forest.row.tolist(), forest.col.tolist(), strict=True))
    for i, j in pairs:
        yield (i, j) if i < j else (j, i)


def hamming_close(
    hashes: np.ndarray,
    threshold: int,
    thumbnails: np.ndarray | None = None,
    colour_threshold: float | None = None,
) -> CloseFn:
    """Closeness by pHash Hamming distance, then (where both have one) colour thumbnails.

    `hashes` is uint64 (n,); `thumbnails` int16 (n, THUMBNAILS_BYTES) with rows of -1 where a
    member has no thumbnail (then the pHash alone decides).
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
        colour = thumbnail_distances(left, right)
        matrix[ii, jj] = ~known | (colour <= colour_threshold)
        return matrix

    return close


def thumbnail_matrix(thumbnails: list[bytes | None]) -> np.ndarray | None:
    """Stack thumbnails as int16 rows (-1 rows for missing ones); None if none is known."""
    if all(t is None for t in thumbnails):
        return None
    out = np.full((len(thumbnails), THUMBNAILS_BYTES), -1, dtype=np.int16)
    for i, thumbnail in enumerate(thumbnails):
        if thumbnail is not None:
            out[i] = np.frombuffer(thumbnail, dtype=np.uint8)
    return out
