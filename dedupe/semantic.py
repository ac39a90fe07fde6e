"""Semantic near-duplicates, SemDeDup style: k-means on CLIP image embeddings, then pairs
within a cluster whose cosine similarity reaches the threshold.

Embeddings come as a PCollection of (record key, 1-d numpy array), joined to the profiles by
key (records without one are left alone). The centroids are fitted on a fixed-size sample
(one small combine), every embedding is assigned to its nearest centroid with the centroids
as a side input, and each cluster is compared all-pairs in one GroupByKey bucket.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np

from dedupe.buckets import spanning_edges
from dedupe.profile import Profile, Rank


def normalised(vector: Any) -> np.ndarray:
    """A float32 unit vector (zero vectors stay zero)."""
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(array))
    return array / norm if norm > 0 else array


def kmeans(vectors: list[np.ndarray], k: int, iterations: int, seed: int = 0) -> np.ndarray:
    """Spherical k-means centroids (k, d) of unit vectors; deterministic for a seed."""
    if not vectors:
        return np.zeros((0, 0), dtype=np.float32)
    data = np.stack(sorted(vectors, key=lambda v: np.asarray(v).tobytes()))
    k = min(k, len(data))
    rng = np.random.default_rng(seed)
    centroids = data[rng.choice(len(data), size=k, replace=False)]
    for _ in range(iterations):
        assigned = np.argmax(data @ centroids.T, axis=1)
        for c in range(k):
            members = data[assigned == c]
            if len(members):
                centroids[c] = normalised(members.mean(axis=0))
    return centroids.astype(np.float32)


def _joined(element: tuple[str, dict[str, list[Any]]]) -> Iterator[tuple[Rank, np.ndarray]]:
    _, joined = element
    if joined["profile"] and joined["embedding"]:
        profile: Profile = joined["profile"][0]
        yield profile.rank, normalised(joined["embedding"][0])


def _assign(member: tuple[Rank, np.ndarray], centroids: np.ndarray) -> tuple[int, Any]:
    return int(np.argmax(centroids @ member[1])) if len(centroids) else 0, member


def cluster_edges(
    members: list[tuple[Rank, np.ndarray]], threshold: float, block: int
) -> Iterator[tuple[Rank, Rank]]:
    """Spanning edges between members with cosine similarity >= threshold."""
    if len(members) < 2:
        return
    members = sorted(members, key=lambda m: m[0])
    matrix = np.stack([m[1] for m in members])

    def close(rows: slice, cols: slice) -> np.ndarray:
        similarity: np.ndarray = matrix[rows] @ matrix[cols].T >= threshold
        return similarity

    for i, j in spanning_edges(len(members), close, block):
        yield members[i][0], members[j][0]


class SemanticEdges(beam.PTransform):
    """Profiles (+ embeddings by key) → edges (Rank, Rank) between semantic duplicates."""

    def __init__(
        self,
        embeddings: beam.PCollection,
        threshold: float,
        clusters: int,
        sample: int,
        iterations: int,
        block: int = 2048,
    ) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.threshold = threshold
        self.clusters = clusters
        self.sample = sample
        self.iterations = iterations
        self.block = block

    def expand(self, profiles: beam.PCollection) -> beam.PCollection:
        threshold, block, k, iterations = self.threshold, self.block, self.clusters, self.iterations
        members = (
            {
                "profile": profiles | "ByKey" >> beam.Map(lambda p: (p.key, p)),
                "embedding": self.embeddings,
            }
            | "JoinEmbeddings" >> beam.CoGroupByKey()
            | "Embedded" >> beam.FlatMap(_joined)
        )
        centroids = (
            members
            | "Vectors" >> beam.Map(lambda m: m[1])
            | "Sample" >> beam.combiners.Sample.FixedSizeGlobally(self.sample)
            | "KMeans" >> beam.Map(kmeans, k, iterations)
        )

        def edges(element: tuple[int, Iterable[tuple[Rank, np.ndarray]]]) -> Iterator[Any]:
            return cluster_edges(list(element[1]), threshold, block)

        return (
            members
            | "Assign" >> beam.Map(_assign, beam.pvalue.AsSingleton(centroids))
            | "Clusters" >> beam.GroupByKey()
            | "CloseInCluster" >> beam.FlatMap(edges)
        )
