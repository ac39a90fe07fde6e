"""Perceptual near-duplicates: LSH banding of the 64-bit pHash, checked pair by pair.

A pHash is cut into `bands` bit ranges; records that share any range's value meet in one
bucket, and inside it every pair within `threshold` bits (and the colour check) becomes an
edge. Two hashes within `bands - 1` bits always share a band; farther pairs meet with a
probability that falls with distance (see `bench/dedupe_scale.py` for the measured recall).

Identical images are collapsed before this (`Deduplicate`'s "SamePhash" exact stage), so a
million copies of a white picture arrive as one profile whose `copies` says a million.

Buckets are sized first (a count per band value, a combiner). A bucket of at most `cap`
members is compared all-pairs, block by block. A bigger ("hot") bucket never is: its
`leaders` most-copied members (ties: best rank) are picked by a combiner (Top-N per bucket,
exact and mergeable), reach the workers as a side input (only hot buckets' leaders), and
every other member of the bucket is compared with those leaders alone and joined to the
first one it is close to: `leaders` comparisons per member, linear in the bucket. Leaders are
compared all-pairs among themselves. A member close to no leader stays unjoined in that
bucket (it may still meet its duplicates in its other bands' buckets) and is counted as
`dedupe.hot_bucket_unmatched`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from dedupe.buckets import hamming_close, spanning_edges, thumbnail_matrix
from dedupe.config import DedupeConfig
from dedupe.fingerprint import band_values, thumbnail_distances
from dedupe.probe import (
    BucketHashes,
    members_and_requests,
    neighbour_lists,
    probe_halves,
    probe_requests,
    verified_probe_edges,
)
from dedupe.profile import Profile, Rank, colour_key_of, thin
from dedupe.stages import BestPerValue, ExactStage, SimilarityStage
from lait.record import NAMESPACE, RejectReason

Member = tuple[Rank, int, bytes | None, int]
"""(rank, pHash, colour thumbnail, copies) of a profile in a bucket."""
Band = tuple[int, int]
ScoredEdge = tuple[Rank, Rank, int]
"""Two ranks and the Hamming bits between their pHashes."""

DEFAULT_LEADERS = 64


def band_members(profile: Profile, bands: int) -> Iterator[tuple[Band, Member]]:
    """One (band key, member) per band of a profile's pHash."""
    if profile.phash is None:
        return
    member = (profile.rank, profile.phash, profile.thumbnail, profile.copies)
    for band in band_values(profile.phash, bands):
        yield band, member


def bucket_edges(
    members: list[Member], threshold: int, colour_threshold: float | None, block: int
) -> Iterator[ScoredEdge]:
    """Spanning edges among one bucket's members that are close, with their Hamming bits."""
    if len(members) < 2:
        return
    members = sorted(members, key=lambda m: m[0])
    hashes = np.array([m[1] for m in members], dtype=np.uint64)
    thumbnails = thumbnail_matrix([m[2] for m in members])
    close = hamming_close(hashes, threshold, thumbnails, colour_threshold)
    for i, j in spanning_edges(len(members), close, block):
        yield members[i][0], members[j][0], (members[i][1] ^ members[j][1]).bit_count()


def leader_order(member: Member) -> tuple[int, Rank]:
    """Leaders of a hot bucket: most copies first, then the keep policy's order."""
    return -member[3], member[0]


def _hot_bucket_sizes(element: tuple[Band, int], cap: int) -> Iterator[tuple[Band, int]]:
    if element[1] > cap:
        Metrics.counter(NAMESPACE, "dedupe.hot_buckets").inc()
        yield element


def _hot_only(element: tuple[Band, Member], hot: dict[Band, int]) -> Iterator[tuple[Band, Member]]:
    if element[0] in hot:
        yield element


def _leader_ranks(element: tuple[Band, list[Member]]) -> Iterator[tuple[Rank, bool]]:
    for member in element[1]:
        yield member[0], True


def _group_of(
    element: tuple[str, dict[str, list[Any]]], leaders: dict[Rank, bool]
) -> Iterator[Any]:
    _, joined = element
    for profile in joined["profile"]:
        if profile.rank in leaders:
            yield profile.rank, profile  # a leader heads its own group
        elif joined["leader"]:
            yield min(joined["leader"]), profile  # into the best leader it is close to
        else:
            yield beam.pvalue.TaggedOutput("free", profile)


def _hot_or_cold(element: tuple[Band, Member], hot: dict[Band, int]) -> Iterator[Any]:
    if element[0] in hot:
        yield beam.pvalue.TaggedOutput("hot", element)
    else:
        yield element


class _JoinLeader(beam.DoFn):
    """A hot bucket's member → an edge to the first of its bucket's leaders it is close to."""

    def __init__(self, threshold: int, colour_threshold: float | None, count: bool = True) -> None:
        self.threshold = threshold
        self.colour_threshold = colour_threshold
        self.count = count
        self._arrays: dict[Band, tuple[list[Rank], np.ndarray, np.ndarray | None]] = {}
        self._source: int | None = None

    def _leaders(
        self, band: Band, leaders: dict[Band, list[Member]]
    ) -> tuple[list[Rank], np.ndarray, np.ndarray | None]:
        if self._source != id(leaders):  # a new side input: forget the arrays of the old one
            self._arrays, self._source = {}, id(leaders)
        arrays = self._arrays.get(band)
        if arrays is None:
            chosen = leaders.get(band, [])
            arrays = (
                [m[0] for m in chosen],
                np.array([m[1] for m in chosen], dtype=np.uint64),
                thumbnail_matrix([m[2] for m in chosen]),
            )
            self._arrays[band] = arrays
        return arrays

    def process(
        self, element: tuple[Band, Member], leaders: dict[Band, list[Member]]
    ) -> Iterator[ScoredEdge]:
        band, (rank, phash, thumbnail, _) = element
        ranks, hashes, thumbnails = self._leaders(band, leaders)
        if rank in ranks:
            return  # a leader: joined to the other leaders by `_leader_edges`
        distance = np.bitwise_count(hashes ^ np.uint64(phash))
        close = distance <= self.threshold
        if self.colour_threshold is not None and thumbnails is not None and thumbnail is not None:
            mine = np.frombuffer(thumbnail, dtype=np.uint8).astype(np.int16).reshape(1, -1)
            colour = thumbnail_distances(thumbnails, np.repeat(mine, len(thumbnails), axis=0))
            close &= (thumbnails[:, 0] < 0) | (colour <= self.colour_threshold)
        hits = np.flatnonzero(close)
        if len(hits) == 0:
            if self.count:
                Metrics.counter(NAMESPACE, "dedupe.hot_bucket_unmatched").inc()
            return
        first = int(hits[0])
        yield ranks[first], rank, int(distance[first])


class PerceptualEdges(beam.PTransform):
    """Profiles → (edges, attachments), each (Rank, Rank, Hamming bits), between near-duplicate
    images: attachments join hot buckets' members to their leaders (see `SimilarityStage`)."""

    def __init__(
        self,
        threshold: int,
        bands: int,
        colour_threshold: float | None,
        block: int = 2048,
        cap: int = 2048,
        leaders: int = DEFAULT_LEADERS,
        probe: bool = False,
    ) -> None:
        super().__init__()
        self.probe = probe
        self.threshold = threshold
        self.bands = bands
        self.colour_threshold = colour_threshold
        self.block = block
        self.cap = cap
        self.leaders = leaders

    def expand(self, profiles: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        threshold, colour, block = self.threshold, self.colour_threshold, self.block
        bands = self.bands

        def edges(element: tuple[Band, Iterable[Member]]) -> Iterator[ScoredEdge]:
            return bucket_edges(list(element[1]), threshold, colour, block)

        def edges_and_halves(element: tuple[Band, Iterable[tuple[str, Any]]]) -> Iterator[Any]:
            members, requests = members_and_requests(element[1])
            yield from bucket_edges(members, threshold, colour, block)
            for half in probe_halves(members, requests):
                yield beam.pvalue.TaggedOutput("half", half)

        members = profiles | "Bands" >> beam.FlatMap(band_members, bands)
        hot = (
            members
            | "Ones" >> beam.Map(lambda bm: (bm[0], 1))
            | "BucketSizes" >> beam.CombinePerKey(sum)
            | "HotBuckets" >> beam.FlatMap(_hot_bucket_sizes, self.cap)
        )
        split = members | "HotOrCold" >> beam.FlatMap(
            _hot_or_cold, beam.pvalue.AsDict(hot)
        ).with_outputs("hot", main="cold")
        if self.probe:  # see dedupe/probe.py
            hashes = (
                split.cold
                | "MemberHashes" >> beam.MapTuple(lambda band, member: (band, member[1]))
                | "BucketHashes" >> beam.CombinePerKey(BucketHashes())
            )
            requests = (
                (
                    hashes | "TagOwn" >> beam.MapTuple(lambda band, h: (band, ("own", h))),
                    hashes
                    | "ToNeighbours" >> beam.FlatMap(neighbour_lists, bands)
                    | "TagNear" >> beam.MapTuple(lambda band, h: (band, ("near", h))),
                )
                | "OwnAndNear" >> beam.Flatten()
                | "ProbeBuckets" >> beam.GroupByKey()
                | "ProbePairs" >> beam.FlatMap(probe_requests, threshold, bands)
            )
            found = (
                (
                    split.cold
                    | "TagMembers" >> beam.MapTuple(lambda band, m: (band, ("member", m))),
                    requests,
                )
                | "MembersAndRequests" >> beam.Flatten()
                | "Buckets" >> beam.GroupByKey()
                | "CloseInBucket"
                >> beam.FlatMap(edges_and_halves).with_outputs("half", main="edges")
            )
            probed = (
                found.half
                | "PairHalves" >> beam.GroupByKey()
                | "CloseAcrossBuckets" >> beam.FlatMap(verified_probe_edges, colour)
            )
            cold = (found.edges, probed) | "ColdEdges" >> beam.Flatten()
        else:
            cold = (
                split.cold | "Buckets" >> beam.GroupByKey() | "CloseInBucket" >> beam.FlatMap(edges)
            )
        leaders = split.hot | "Leaders" >> beam.combiners.Top.PerKey(
            self.leaders, key=leader_order, reverse=True
        )
        among_leaders = leaders | "CloseAmongLeaders" >> beam.FlatMap(edges)
        to_leaders = split.hot | "CloseToLeader" >> beam.ParDo(
            _JoinLeader(threshold, colour), beam.pvalue.AsDict(leaders)
        )
        return (cold, among_leaders) | "Edges" >> beam.Flatten(), to_leaders


def perceptual_identity(colour_threshold: float | None) -> Any:
    """value(profile) for collapsing identical images before banding: the pHash, and the
    uncropped colour thumbnail quantised in steps of floor(colour_threshold) + 1 (its digest,
    `colour_key_of`), so two profiles with one value differ by at most floor(colour_threshold)
    on every byte of it and would pass the pairwise colour check (a minimum over crops, that
    one included) anyway. A thin profile brings the digest (`colour_key`) instead of the
    thumbnail. Profiles without a thumbnail form their own values (they meet the others in
    the buckets, where the pHash alone decides)."""

    def identity(profile: Profile) -> tuple[int, bytes | None] | None:
        if profile.phash is None:
            return None
        if colour_threshold is None:
            return profile.phash, None
        if profile.thumbnail is not None:
            return profile.phash, colour_key_of(profile.thumbnail, colour_threshold)
        return profile.phash, profile.colour_key

    return identity


def _with_thumbnail(element: tuple[str, dict[str, list[Any]]]) -> Iterator[Profile]:
    _, joined = element
    for profile in joined["profile"]:
        thumbnails = joined["thumbnail"]
        yield dataclasses.replace(profile, thumbnail=thumbnails[0]) if thumbnails else profile


class WithThumbnails(beam.PTransform):
    """Thin profiles + (key, thumbnail) → the profiles with their thumbnails back (a join by
    key; keys are unique among profiles by then, so no group holds more than two values)."""

    def __init__(self, thumbnails: beam.PCollection) -> None:
        super().__init__()
        self.thumbnails = thumbnails

    def expand(self, profiles: beam.PCollection) -> beam.PCollection:
        return (
            {
                "profile": profiles | "ByKey" >> beam.Map(lambda p: (p.key, p)),
                "thumbnail": self.thumbnails,
            }
            | "Join" >> beam.CoGroupByKey()
            | "Thumbnail" >> beam.FlatMap(_with_thumbnail)
        )


def _in_hot_bucket(profile: Profile, bands: int, hot: dict[Band, int]) -> Iterator[Any]:
    if profile.phash is not None and any(b in hot for b in band_values(profile.phash, bands)):
        yield profile
    else:
        yield beam.pvalue.TaggedOutput("free", profile)


class AbsorbIntoLeaders(beam.PTransform):
    """Profiles → (survivors, decisions): every member of a hot bucket that is close to one of
    the bucket's leaders joins the group of the best such leader (over all its bands), and
    each group keeps its best profile (the keep policy, by a combiner: `BestPerValue`).

    This is the near-copy counterpart of collapsing identical pHashes: a million re-encodes
    of one picture become one profile before the edges and clusters, instead of a million
    nodes in every round of label propagation. Leaders are never absorbed (they head their
    groups); the groups' survivors meet each other and everything else in "NearImage".
    """

    def __init__(self, config: DedupeConfig, detail: str) -> None:
        super().__init__()
        self.config = config
        self.detail = detail

    def expand(self, profiles: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        config = self.config
        members = profiles | "Bands" >> beam.FlatMap(band_members, config.phash_bands)
        hot = (
            members
            | "Ones" >> beam.Map(lambda bm: (bm[0], 1))
            | "BucketSizes" >> beam.CombinePerKey(sum)
            | "HotBuckets" >> beam.FlatMap(_hot_bucket_sizes, config.bucket_cap)
        )
        in_hot = members | "InHotBuckets" >> beam.FlatMap(_hot_only, beam.pvalue.AsDict(hot))
        # only profiles with a band in a hot bucket can join a leader: the others (nearly all,
        # unless a picture is copied thousands of times) pass without a shuffle
        split = profiles | "HotProfiles" >> beam.FlatMap(
            _in_hot_bucket, config.phash_bands, beam.pvalue.AsDict(hot)
        ).with_outputs("free", main="hot")
        leaders = in_hot | "Leaders" >> beam.combiners.Top.PerKey(
            config.bucket_leaders, key=leader_order, reverse=True
        )
        leader_ranks = (
            leaders
            | "LeaderRanks" >> beam.FlatMap(_leader_ranks)
            | "OneRank" >> beam.CombinePerKey(any)
        )
        best_leader = (
            in_hot
            | "CloseToLeader"
            >> beam.ParDo(
                _JoinLeader(config.phash_threshold, config.colour_threshold, count=False),
                beam.pvalue.AsDict(leaders),
            )
            | "ByMember" >> beam.Map(lambda e: (e[1][-1], e[0]))
            | "BestLeader" >> beam.CombinePerKey(min)
        )
        grouped = (
            {
                "profile": split.hot | "ByKey" >> beam.Map(lambda p: (p.key, p)),
                "leader": best_leader,
            }
            | "JoinLeaders" >> beam.CoGroupByKey()
            | "GroupOf"
            >> beam.FlatMap(_group_of, beam.pvalue.AsDict(leader_ranks)).with_outputs(
                "free", main="grouped"
            )
        )
        kept, decisions = grouped.grouped | "BestOfGroup" >> BestPerValue(
            RejectReason.DUPLICATE_PERCEPTUAL, self.detail, config.bucket_cap
        )
        survivors = (kept, grouped.free, split.free) | "Survivors" >> beam.Flatten()
        return survivors, decisions


class PerceptualStage(beam.PTransform):
    """Profiles → (survivors, decisions) of the perceptual stage: identical pHashes collapsed
    by a combiner ("SamePhash"), near copies in hot buckets absorbed into their leaders
    ("IntoLeaders"), then near ones through LSH buckets and clusters ("NearImage").
    """

    def __init__(self, config: DedupeConfig, thumbnails: beam.PCollection | None = None) -> None:
        super().__init__()
        self.config = config
        self.thumbnails = thumbnails

    def expand(self, profiles: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        config, cap = self.config, self.config.bucket_cap
        colour = (
            f", colour within {config.colour_threshold}"
            if config.colour_threshold is not None
            else ""
        )
        profiles, same = profiles | "SamePhash" >> ExactStage(
            perceptual_identity(config.colour_threshold),
            RejectReason.DUPLICATE_PERCEPTUAL,
            f"near-duplicate image (same pHash{colour})",
            cap,
        )
        if self.thumbnails is not None:  # thin profiles: their thumbnails join them here
            profiles = profiles | "WithThumbnails" >> WithThumbnails(self.thumbnails)
        profiles, absorbed = profiles | "IntoLeaders" >> AbsorbIntoLeaders(
            config,
            f"near-duplicate image (pHash within {config.phash_threshold} bits{colour} of a "
            "much-copied picture's)",
        )
        edges = PerceptualEdges(
            config.phash_threshold,
            config.phash_bands,
            config.colour_threshold,
            config.block_size,
            cap,
            config.bucket_leaders,
            config.phash_probe,
        )
        survivors, near = profiles | "NearImage" >> SimilarityStage(
            edges,
            RejectReason.DUPLICATE_PERCEPTUAL,
            f"near-duplicate image (pHash within {config.phash_threshold} bits{colour})",
            config.component_rounds,
            limit=config.phash_threshold,
            higher_is_closer=False,
            hub_degree=cap,
            survivor_view=lambda p: thin(p, config.colour_threshold),
        )
        return survivors, (same, absorbed, near) | "Decisions" >> beam.Flatten()
