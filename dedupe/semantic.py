"""Semantic near-duplicates, SemDeDup style: k-means on CLIP image embeddings, then pairs
within a cluster whose cosine similarity reaches the threshold.

Embeddings come as a PCollection of (record key, 1-d numpy array), joined to the profiles by
key (records without one are left alone). The number of clusters follows the number of
embeddings N: ceil(N / cluster_size), at most `max_clusters` (or a fixed `clusters`). The
centroids are fitted by faiss k-means on a sample of about max(sample, 40 k) embeddings (kept
by a hash of the key, so reruns agree), every embedding is assigned to its nearest centroid
with the centroids as a side input, and inside each cluster faiss finds every pair at or over
the threshold (a range search over an exact inner-product index), from which a spanning
forest of edges, each with its cosine, is emitted.

A hot cluster (more than `cluster_cap` members: k-means puts a million near-identical
embeddings of a stock photo in one) is never searched whole in one process: its members are
split into ceil(n / cluster_cap) blocks by a hash of their key, and each pair of blocks is
one group (block with itself: all pairs; two blocks: the pairs across), so every group holds
at most about 2 * cluster_cap members and the search stays exact. Counted as
`dedupe.semantic_hot_clusters`; `dedupe.semantic_group_size` records every group's size.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import faiss
import numpy as np
from apache_beam.metrics import Metrics

from dedupe.buckets import forest_of_pairs
from dedupe.keep_best import salt_of
from dedupe.profile import Profile, Rank
from lait.record import NAMESPACE

KMEANS_SEED = 1234
_SAMPLE_PER_CLUSTER = 40  # faiss asks for at least 39 training points per centroid


def normalised(vector: Any) -> np.ndarray:
    """A float32 unit vector (zero vectors stay zero)."""
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(array))
    return array / norm if norm > 0 else array


def cluster_count(n: int, clusters: int | None, cluster_size: int, max_clusters: int) -> int:
    """How many k-means clusters for n embeddings: `clusters` if given, else one per
    `cluster_size` embeddings, at most `max_clusters`, at least 1."""
    if clusters is not None:
        return max(1, min(clusters, n))
    return max(1, min(max_clusters, math.ceil(n / cluster_size)))


def kmeans(
    vectors: list[np.ndarray], k: int, iterations: int, seed: int = KMEANS_SEED
) -> np.ndarray:
    """Spherical k-means centroids (k, d) of unit vectors (faiss); deterministic for a seed."""
    if not vectors:
        return np.zeros((0, 0), dtype=np.float32)
    data = np.ascontiguousarray(
        np.stack(sorted(vectors, key=lambda v: np.asarray(v).tobytes())), dtype=np.float32
    )
    k = min(k, len(data))
    if k == len(data):
        return data
    model = faiss.Kmeans(
        data.shape[1],
        k,
        niter=iterations,
        seed=seed,
        spherical=True,
        verbose=False,
        min_points_per_centroid=1,
    )
    model.train(data)
    return np.asarray(model.centroids, dtype=np.float32)


def _sampled(key: str, probability: float) -> bool:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < probability


def _joined(element: tuple[str, dict[str, list[Any]]]) -> Iterator[tuple[Rank, np.ndarray]]:
    _, joined = element
    if joined["profile"] and joined["embedding"]:
        profile: Profile = joined["profile"][0]
        yield profile.rank, normalised(joined["embedding"][0])


class _Assign(beam.DoFn):
    """A member → (nearest centroid, member), the centroids in a faiss index built once."""

    def __init__(self) -> None:
        self._index: Any = None
        self._source: int | None = None

    def process(
        self, member: tuple[Rank, np.ndarray], centroids: np.ndarray
    ) -> Iterator[tuple[int, tuple[Rank, np.ndarray]]]:
        if len(centroids) == 0:
            yield 0, member
            return
        if self._source != id(centroids):
            self._index = faiss.IndexFlatIP(centroids.shape[1])
            self._index.add(np.ascontiguousarray(centroids, dtype=np.float32))
            self._source = id(centroids)
        _, nearest = self._index.search(member[1].reshape(1, -1), 1)
        yield int(nearest[0, 0]), member


def cluster_edges(
    members: list[tuple[Rank, np.ndarray]], threshold: float, block: int = 4096
) -> Iterator[tuple[Rank, Rank, float]]:
    """Spanning edges (with their cosine) between members with cosine >= threshold."""
    if len(members) < 2:
        return
    members = sorted(members, key=lambda m: m[0])
    matrix = np.ascontiguousarray(np.stack([m[1] for m in members]), dtype=np.float32)
    index = faiss.IndexFlatIP(matrix.shape[1])
    index.add(matrix)
    rows, cols = [], []
    # range search keeps inner products strictly above the radius
    radius = float(np.nextafter(np.float32(threshold), np.float32(-2)))
    for start in range(0, len(matrix), block):
        limits, _, found = index.range_search(matrix[start : start + block], radius)
        counts: np.ndarray = np.diff(np.asarray(limits, dtype=np.int64)).astype(np.int64)
        query = np.repeat(np.arange(start, start + len(counts)), counts)
        upper = query < found
        rows.append(query[upper].astype(np.int32))
        cols.append(found[upper].astype(np.int32))
    for i, j in forest_of_pairs(len(members), np.concatenate(rows), np.concatenate(cols)):
        yield members[i][0], members[j][0], round(float(matrix[i] @ matrix[j]), 4)


def cross_edges(
    left: list[tuple[Rank, np.ndarray]], right: list[tuple[Rank, np.ndarray]], threshold: float
) -> Iterator[tuple[Rank, Rank, float]]:
    """Spanning edges (with their cosine) between a member of `left` and one of `right` with
    cosine >= threshold (pairs inside one side are left to that side's own group)."""
    if not left or not right:
        return
    a = np.ascontiguousarray(np.stack([m[1] for m in left]), dtype=np.float32)
    b = np.ascontiguousarray(np.stack([m[1] for m in right]), dtype=np.float32)
    index = faiss.IndexFlatIP(b.shape[1])
    index.add(b)
    radius = float(np.nextafter(np.float32(threshold), np.float32(-2)))
    limits, _, found = index.range_search(a, radius)
    counts: np.ndarray = np.diff(np.asarray(limits, dtype=np.int64)).astype(np.int64)
    query = np.repeat(np.arange(len(a)), counts)
    ranks = [m[0] for m in left] + [m[0] for m in right]
    for i, j in forest_of_pairs(len(ranks), query, np.asarray(found, dtype=np.int64) + len(a)):
        first, second = sorted((ranks[i], ranks[j]))
        yield first, second, round(float(a[i] @ b[j - len(a)]), 4)


Block = tuple[int, int, int]
"""(cluster, block i, block j), i <= j: the group comparing two blocks of a hot cluster."""


def _hot_clusters(element: tuple[int, int], cap: int) -> Iterator[tuple[int, int]]:
    cluster, count = element
    if count > cap:
        Metrics.counter(NAMESPACE, "dedupe.semantic_hot_clusters").inc()
        yield cluster, math.ceil(count / cap)


def block_pairs(
    element: tuple[int, tuple[Rank, np.ndarray]], hot: dict[int, int]
) -> Iterator[tuple[Block, tuple[int, tuple[Rank, np.ndarray]]]]:
    """A member of cluster c → its group(s). An ordinary cluster is one group; a hot one of
    `blocks` blocks (a member's block is a hash of its key) is compared block pair by block
    pair, so a member goes to the `blocks` groups of its block and no group holds more than
    two blocks (about 2 * cap members)."""
    cluster, member = element
    blocks = hot.get(cluster, 1)
    if blocks == 1:
        yield (cluster, 0, 0), (0, member)
        return
    mine = salt_of(member[0][-1], blocks)
    for other in range(blocks):
        yield (cluster, min(mine, other), max(mine, other)), (mine, member)


def block_edges(
    element: tuple[Block, Iterable[tuple[int, tuple[Rank, np.ndarray]]]], threshold: float
) -> Iterator[tuple[Rank, Rank, float]]:
    """Edges of one group: all pairs of a block with itself, or across two blocks."""
    (_, i, j), tagged = element
    sides: dict[int, list[tuple[Rank, np.ndarray]]] = {i: [], j: []}
    for block, member in tagged:
        sides[block].append(member)
    Metrics.distribution(NAMESPACE, "dedupe.semantic_group_size").update(
        sum(len(v) for v in sides.values())
    )
    if i == j:
        yield from cluster_edges(sides[i], threshold)
    else:
        yield from cross_edges(sides[i], sides[j], threshold)


class SemanticEdges(beam.PTransform):
    """Profiles (+ embeddings by key) → edges (Rank, Rank, cosine) between semantic duplicates."""

    def __init__(
        self,
        embeddings: beam.PCollection,
        threshold: float,
        clusters: int | None,
        sample: int,
        iterations: int,
        cluster_size: int = 1000,
        max_clusters: int = 50_000,
        cluster_cap: int = 4096,
    ) -> None:
        super().__init__()
        self.cluster_cap = cluster_cap
        self.embeddings = embeddings
        self.threshold = threshold
        self.clusters = clusters
        self.sample = sample
        self.iterations = iterations
        self.cluster_size = cluster_size
        self.max_clusters = max_clusters

    def expand(self, profiles: beam.PCollection) -> beam.PCollection:
        threshold, iterations, sample = self.threshold, self.iterations, self.sample
        clusters, size, most = self.clusters, self.cluster_size, self.max_clusters
        members = (
            {
                "profile": profiles | "ByKey" >> beam.Map(lambda p: (p.key, p)),
                "embedding": self.embeddings,
            }
            | "JoinEmbeddings" >> beam.CoGroupByKey()
            | "Embedded" >> beam.FlatMap(_joined)
        )
        count = members | "Count" >> beam.combiners.Count.Globally()

        def k_of(n: int) -> int:
            return cluster_count(n, clusters, size, most)

        def keep(member: tuple[Rank, np.ndarray], n: int) -> bool:
            target = max(sample, _SAMPLE_PER_CLUSTER * k_of(n))
            return _sampled(member[0][-1], target / max(1, n))

        def fit(vectors: list[np.ndarray], n: int) -> np.ndarray:
            Metrics.distribution(NAMESPACE, "dedupe.semantic_clusters").update(k_of(n))
            return kmeans(vectors, k_of(n), iterations)

        centroids = (
            members
            | "Sample" >> beam.Filter(keep, beam.pvalue.AsSingleton(count))
            | "Vectors" >> beam.Map(lambda m: m[1])
            | "AllSampled" >> beam.combiners.ToList()
            | "KMeans" >> beam.Map(fit, beam.pvalue.AsSingleton(count))
        )

        assigned = members | "Assign" >> beam.ParDo(_Assign(), beam.pvalue.AsSingleton(centroids))
        hot = (
            assigned
            | "Ones" >> beam.MapTuple(lambda cluster, _: (cluster, 1))
            | "ClusterSizes" >> beam.CombinePerKey(sum)
            | "HotClusters" >> beam.FlatMap(_hot_clusters, self.cluster_cap)
        )
        return (
            assigned
            | "ToBlocks" >> beam.FlatMap(block_pairs, beam.pvalue.AsDict(hot))
            | "Clusters" >> beam.GroupByKey()
            | "CloseInCluster" >> beam.FlatMap(block_edges, threshold)
        )
