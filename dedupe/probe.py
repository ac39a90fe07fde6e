"""Multi-probe LSH between neighbouring pHash buckets, without copying members into them.

Banding alone guarantees that two hashes within `bands - 1` bits (5 of 64 with six bands)
share a bucket; a pair 6-10 bits apart whose differing bits touch every band meets nowhere.
Such a pair still has a band in which it differs by a single bit (pigeonhole, up to
`2 * bands - 1` bits), so bucket (band, v) and bucket (band, v ^ 1 << bit) hold it between
them. Copying every member into each of its 11 neighbour buckets would multiply the bucket
shuffle by 12 (and its colour thumbnails with it); instead, each bucket's *distinct hashes*
travel to its neighbours as one numpy array per (bucket, neighbour), a few kilobytes per
bucket, not per member:

1. `BucketHashes`: (band, value) → the bucket's distinct pHashes (a set-union combiner), as
   raw bytes (8 per hash).
2. `neighbour_lists`: each bucket's hashes → the (band, value ^ 1 << bit) keys of its band;
   in a group of hashes only (its own and its neighbours') `probe_requests` finds its own
   hashes within the threshold of a neighbour's that share no band with it (the pairs
   banding already finds are left to it). The neighbour finds the same pair from its side.
3. The requests (rare: real near copies) join the bucket's members (thumbnails included) in
   the bucket's group, where `probe_halves` emits each requested member as one *half* of a
   pair, keyed by the two hashes.
4. `verified_probe_edges`: the two halves meet in a group keyed by the hash pair, where
   both thumbnails are known and the colour check decides, as inside a bucket.

Both buckets must be ordinary (cold) ones; a pair whose other half is in a hot bucket (one
compared only with its leaders) is counted as `dedupe.probe_unpaired`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import CombineFn

from dedupe.buckets import forest_of_pairs, thumbnail_matrix
from dedupe.fingerprint import band_slices, thumbnail_distances
from dedupe.profile import Rank
from lait.record import NAMESPACE

Band = tuple[int, int]
Half = tuple[int, Rank, bytes | None]
"""(pHash, rank, colour thumbnail) of one end of a probed pair."""
_BLOCK_CELLS = 1 << 22  # hash comparisons per numpy block (4M: 32 MB of uint64)


class BucketHashes(CombineFn):
    """A bucket's members' pHashes → their distinct values, as a sorted uint64 array."""

    def create_accumulator(self) -> set[int]:
        return set()

    def add_input(self, accumulator: set[int], phash: int) -> set[int]:
        accumulator.add(phash)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[set[int]]) -> set[int]:
        merged: set[int] = set()
        for accumulator in accumulators:
            merged |= accumulator
        return merged

    def extract_output(self, accumulator: set[int]) -> bytes:
        # raw little-endian uint64s: a numpy array would cross the shuffle pickled, which
        # costs a hundred bytes or more per bucket in framing alone
        return np.array(sorted(accumulator), dtype="<u8").tobytes()


def neighbour_lists(element: tuple[Band, bytes], bands: int) -> Iterator[tuple[Band, bytes]]:
    """A bucket's distinct hashes (`BucketHashes`) → one copy for each bucket one bit away in
    its band."""
    (band, value), hashes = element
    _, mask = band_slices(bands)[band]
    for bit in range(mask.bit_length()):
        yield (band, value ^ (1 << bit)), hashes


def _share_a_band(a: np.ndarray, b: np.ndarray, bands: int) -> np.ndarray:
    shared = np.zeros(len(a), dtype=bool)
    for shift, mask in band_slices(bands):
        s, m = np.uint64(shift), np.uint64(mask)
        shared |= ((a >> s) & m) == ((b >> s) & m)
    return shared


def probe_requests(
    element: tuple[Band, Iterable[tuple[str, bytes]]], threshold: int, bands: int
) -> Iterator[tuple[Band, tuple[str, tuple[int, int]]]]:
    """A bucket's own distinct hashes and its neighbours' → (this bucket, ("probe", (own hash,
    other hash))) for each own hash within `threshold` bits of a neighbour's hash and in no
    common band with it (the pairs banding already finds are left to it)."""
    band, tagged = element
    own_parts: list[np.ndarray] = []
    near_parts: list[np.ndarray] = []
    for tag, raw in tagged:
        (own_parts if tag == "own" else near_parts).append(np.frombuffer(raw, dtype="<u8"))
    if not own_parts or not near_parts:
        return  # an empty or hot bucket: nobody here to pair with
    own = np.unique(np.concatenate(own_parts)).astype(np.uint64)
    others = np.unique(np.concatenate(near_parts)).astype(np.uint64)
    rows = max(1, _BLOCK_CELLS // max(1, len(others)))
    for start in range(0, len(own), rows):
        block = own[start : start + rows]
        ii, jj = np.nonzero(np.bitwise_count(block[:, None] ^ others[None, :]) <= threshold)
        if len(ii) == 0:
            continue
        mine, theirs = block[ii], others[jj]
        keep = ~_share_a_band(mine, theirs, bands)
        for a, b in zip(mine[keep].tolist(), theirs[keep].tolist(), strict=True):
            yield band, ("probe", (a, b))


def probe_halves(
    members: list[tuple[Rank, int, bytes | None, int]], requests: list[tuple[int, int]]
) -> Iterator[tuple[tuple[int, int], Half]]:
    """A bucket's members and its probe requests (own hash, other hash) → ((lower hash,
    higher hash), half) for every member with a requested hash."""
    if not members or not requests:
        return
    wanted: dict[int, list[int]] = {}
    for own, other in requests:
        wanted.setdefault(own, []).append(other)
    for rank, phash, thumbnail, _ in members:
        for other in wanted.get(phash, ()):
            yield (min(phash, other), max(phash, other)), (phash, rank, thumbnail)


def verified_probe_edges(
    element: tuple[tuple[int, int], Iterable[Half]], colour_threshold: float | None
) -> Iterator[tuple[Rank, Rank, int]]:
    """The halves of one hash pair → spanning edges (with their Hamming bits) between the
    members of the two sides whose colour thumbnails agree (or where one has none)."""
    (low, high), halves = element
    sides: dict[int, dict[Rank, bytes | None]] = {low: {}, high: {}}
    for phash, rank, thumbnail in halves:
        sides[phash][rank] = thumbnail  # a pair found in several bands sends its halves twice
    lows, highs = sorted(sides[low].items()), sorted(sides[high].items())
    if not lows or not highs:
        Metrics.counter(NAMESPACE, "dedupe.probe_unpaired").inc()
        return
    bits = (low ^ high).bit_count()
    ii = np.repeat(np.arange(len(lows)), len(highs))
    jj = np.tile(np.arange(len(highs)), len(lows))
    close = np.ones(len(ii), dtype=bool)
    left = thumbnail_matrix([t for _, t in lows])
    right = thumbnail_matrix([t for _, t in highs])
    if colour_threshold is not None and left is not None and right is not None:
        a, b = left[ii], right[jj]
        known = (a[:, 0] >= 0) & (b[:, 0] >= 0)
        close = ~known | (thumbnail_distances(a, b) <= colour_threshold)
    ranks = [r for r, _ in lows] + [r for r, _ in highs]
    pairs = forest_of_pairs(len(ranks), ii[close], jj[close] + len(lows))
    for i, j in pairs:
        first, second = sorted((ranks[i], ranks[j]))
        Metrics.counter(NAMESPACE, "dedupe.probe_edges").inc()
        yield first, second, bits


def members_and_requests(
    tagged: Iterable[tuple[str, Any]],
) -> tuple[list[Any], list[tuple[int, int]]]:
    """A bucket group's tagged values → (its members, its probe requests)."""
    members: list[Any] = []
    requests: list[tuple[int, int]] = []
    for tag, value in tagged:
        (members if tag == "member" else requests).append(value)
    return members, requests
