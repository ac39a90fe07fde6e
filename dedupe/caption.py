"""Caption near-duplicates: MinHash signatures of word shingles, banded into LSH buckets.

Captions are normalised (lower case, every digit run → "0") so templated spam that only
changes a number or a price meets; pairs in a bucket are kept only if the exact Jaccard of
their shingle sets reaches the threshold. Captions under `min_words` words are skipped: short
captions ("a red circle") repeat across unrelated images by nature.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np
from datasketch import MinHash

from dedupe.buckets import spanning_edges
from dedupe.profile import Profile, Rank

_WORD = re.compile(r"\w+")
_DIGITS = re.compile(r"\d+")
MINHASH_SEED = 1


def caption_words(caption: str) -> list[str]:
    """Lower-cased words with digit runs collapsed to "0"."""
    return _WORD.findall(_DIGITS.sub("0", caption.lower()))


def shingles(caption: str, size: int) -> set[str]:
    """The set of `size`-word shingles of a caption (the whole caption if shorter)."""
    words = caption_words(caption)
    if len(words) <= size:
        return {" ".join(words)}
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """|a ∩ b| / |a ∪ b| (0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def minhash_bands(caption: str, size: int, num_perm: int, bands: int) -> list[tuple[int, bytes]]:
    """(band index, band bytes) of the caption's MinHash signature."""
    signature = MinHash(num_perm=num_perm, seed=MINHASH_SEED)
    for shingle in sorted(shingles(caption, size)):
        signature.update(shingle.encode("utf-8"))
    rows = num_perm // bands
    values = signature.hashvalues
    return [(b, values[b * rows : (b + 1) * rows].tobytes()) for b in range(bands)]


class CaptionEdges(beam.PTransform):
    """Profiles → edges (Rank, Rank) between captions with Jaccard >= threshold."""

    def __init__(
        self, threshold: float, shingle_words: int, min_words: int, num_perm: int, bands: int
    ) -> None:
        super().__init__()
        self.threshold = threshold
        self.shingle_words = shingle_words
        self.min_words = min_words
        self.num_perm = num_perm
        self.bands = bands

    def expand(self, profiles: beam.PCollection) -> beam.PCollection:
        size, min_words, threshold = self.shingle_words, self.min_words, self.threshold
        num_perm, bands = self.num_perm, self.bands

        def banded(profile: Profile) -> Iterator[tuple[tuple[int, bytes], tuple[Rank, str]]]:
            if len(caption_words(profile.caption)) < min_words:
                return
            for band in minhash_bands(profile.caption, size, num_perm, bands):
                yield band, (profile.rank, profile.caption)

        def edges(
            element: tuple[tuple[int, bytes], Iterable[tuple[Rank, str]]],
        ) -> Iterator[tuple[Rank, Rank]]:
            members = sorted(element[1])
            if len(members) < 2:
                return
            sets = [shingles(caption, size) for _, caption in members]

            def close(rows: slice, cols: slice) -> np.ndarray:
                return np.array(
                    [
                        [
                            jaccard(sets[i], sets[j]) >= threshold
                            for j in range(cols.start, cols.stop)
                        ]
                        for i in range(rows.start, rows.stop)
                    ],
                    dtype=bool,
                ).reshape(rows.stop - rows.start, cols.stop - cols.start)

            for i, j in spanning_edges(len(members), close, 512):
                yield members[i][0], members[j][0]

        return (
            profiles
            | "Signatures" >> beam.FlatMap(banded)
            | "Buckets" >> beam.GroupByKey()
            | "CloseInBucket" >> beam.FlatMap(edges)
        )
