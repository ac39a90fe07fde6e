"""Perceptual near-duplicates: LSH banding of the 64-bit pHash, checked pair by pair.

A pHash is cut into `bands` bit ranges; records that share any range's value meet in one
GroupByKey bucket, and inside it every pair within `threshold` bits (and the colour check)
becomes an edge. Two hashes within `bands - 1` bits always share a band; farther pairs meet
with a probability that falls with distance (see `bench/dedupe_scale.py` for the measured recall).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np

from dedupe.buckets import hamming_close, spanning_edges, thumbnail_matrix
from dedupe.fingerprint import band_values
from dedupe.profile import Profile, Rank

Member = tuple[Rank, int, bytes | None]


def band_members(profile: Profile, bands: int) -> Iterator[tuple[tuple[int, int], Member]]:
    """One (band key, member) per band of a profile's pHash."""
    if profile.phash is None:
        return
    member = (profile.rank, profile.phash, profile.thumbnail)
    for band in band_values(profile.phash, bands):
        yield band, member


def bucket_edges(
    members: list[Member], threshold: int, colour_threshold: float | None, block: int
) -> Iterator[tuple[Rank, Rank]]:
    """Spanning edges among one bucket's members that are close."""
    if len(members) < 2:
        return
    members = sorted(members, key=lambda m: m[0])
    hashes = np.array([m[1] for m in members], dtype=np.uint64)
    thumbnails = thumbnail_matrix([m[2] for m in members])
    close = hamming_close(hashes, threshold, thumbnails, colour_threshold)
    for i, j in spanning_edges(len(members), close, block):
        yield members[i][0], members[j][0]


class PerceptualEdges(beam.PTransform):
    """Profiles → edges (Rank, Rank) between near-duplicate images."""

    def __init__(
        self, threshold: int, bands: int, colour_threshold: float | None, block: int = 2048
    ) -> None:
        super().__init__()
        self.threshold = threshold
        self.bands = bands
        self.colour_threshold = colour_threshold
        self.block = block

    def expand(self, profiles: beam.PCollection) -> beam.PCollection:
        threshold, colour, block = self.threshold, self.colour_threshold, self.block

        def edges(element: tuple[tuple[int, int], Iterable[Member]]) -> Iterator[tuple[Rank, Rank]]:
            return bucket_edges(list(element[1]), threshold, colour, block)

        return (
            profiles
            | "Bands" >> beam.FlatMap(band_members, self.bands)
            | "Buckets" >> beam.GroupByKey()
            | "CloseInBucket" >> beam.FlatMap(edges)
        )
