"""The two shapes of dedupe stage, over profiles: exact (group by a value) and similarity
(edges from LSH buckets → connected components → one survivor per cluster).

Each stage returns (survivors, decisions): the profiles it kept, for the next stage, and
(key, Decision) for every profile it dropped.

No group of one value is ever held whole: the best profile of each value is a combiner
(lifted before the shuffle), values with more than `cap` profiles ("hot": a site-wide logo,
a white image) are told their survivor through a side input holding only those values
(at most N / cap entries), and only the others meet in a GroupByKey of at most `cap`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from dedupe.components import ConnectedComponents
from dedupe.decisions import Decision
from dedupe.profile import Profile, Rank, best_profile
from lait.record import RejectReason
from pipeline.outcomes import NAMESPACE

_DECIDED = "decided"
_HOT = "hot"
DEFAULT_CAP = 2048

Best = tuple[int, Profile | None]
"""(profiles seen, copies they stand for, best profile) of one value, as the combiner holds it."""


class BestOfValue(beam.CombineFn):
    """(copies, best profile) of the profiles of one value: exact, mergeable, O(1) state."""

    def create_accumulator(self) -> Best:
        return 0, None

    def add_input(self, accumulator: Best, profile: Profile) -> Best:
        copies, best = accumulator
        return copies + profile.copies, profile if best is None else best_profile(best, profile)

    def merge_accumulators(self, accumulators: Iterable[Best]) -> Best:
        copies, best = 0, None
        for more, other in accumulators:
            copies += more
            if other is not None:
                best = other if best is None else best_profile(best, other)
        return copies, best

    def extract_output(self, accumulator: Best) -> Best:
        return accumulator


def _hot_survivor(element: tuple[Any, Best], cap: int) -> Iterator[tuple[Any, tuple[str, int]]]:
    value, (copies, best) = element
    if best is not None and copies > cap:
        yield value, (best.key, copies)


def _hot_or_cold(
    element: tuple[Any, Profile],
    hot: dict[Any, tuple[str, int]],
    reason: RejectReason,
    detail: str,
) -> Iterator[Any]:
    value, profile = element
    survivor = hot.get(value)
    if survivor is None:
        yield element
        return
    Metrics.counter(NAMESPACE, "dedupe.hot_value_members").inc()
    key, copies = survivor
    if profile.key == key:
        yield beam.pvalue.TaggedOutput(_HOT, dataclasses.replace(profile, copies=copies))
    else:
        yield beam.pvalue.TaggedOutput(_DECIDED, (profile.key, Decision(reason, key, detail)))


def _cold_group(
    element: tuple[Any, Iterable[Profile]], reason: RejectReason, detail: str
) -> Iterator[Any]:
    # A cold group holds at most `cap` profiles (hot values never get here): two passes,
    # no sort.
    _, members = element
    members = list(members)
    keeper = members[0]
    copies = 0
    for profile in members:
        keeper = best_profile(keeper, profile)
        copies += profile.copies
    yield dataclasses.replace(keeper, copies=copies)
    for profile in members:
        if profile.key != keeper.key:
            yield beam.pvalue.TaggedOutput(
                _DECIDED, (profile.key, Decision(reason, keeper.key, detail))
            )


class _HasValue(beam.PartitionFn):
    def __init__(self, value: Callable[[Profile], Any]) -> None:
        self.value = value

    def partition_for(self, element: Any, num_partitions: int, *args: Any, **kwargs: Any) -> int:
        return 0 if self.value(element) is not None else 1


class ExactStage(beam.PTransform):
    """Profiles sharing `value(profile)` (not None) form one cluster; the best survives.

    The survivor's `copies` becomes the sum over its cluster (a later stage weighs it).
    Hot values (more than `cap` profiles) are decided without a group: see the module doc.
    """

    def __init__(
        self,
        value: Callable[[Profile], Any],
        reason: RejectReason,
        detail: str,
        cap: int = DEFAULT_CAP,
    ) -> None:
        super().__init__()
        self.value = value
        self.reason = reason
        self.detail = detail
        self.cap = cap

    def expand(self, profiles: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        value, reason, detail = self.value, self.reason, self.detail
        valued, unvalued = profiles | "HasValue" >> beam.Partition(_HasValue(value), 2)
        by_value = valued | "ByValue" >> beam.Map(lambda p: (value(p), p))
        hot = (
            by_value
            | "BestOfValue" >> beam.CombinePerKey(BestOfValue())
            | "HotValues" >> beam.FlatMap(_hot_survivor, self.cap)
        )
        split = by_value | "HotOrCold" >> beam.FlatMap(
            _hot_or_cold, beam.pvalue.AsDict(hot), reason, detail
        ).with_outputs(_HOT, _DECIDED, main="cold")
        cold = (
            split.cold
            | "GroupCold" >> beam.GroupByKey()
            | "KeepBest"
            >> beam.FlatMap(_cold_group, reason, detail).with_outputs(_DECIDED, main="kept")
        )
        survivors = (cold.kept, split[_HOT], unvalued) | "Survivors" >> beam.Flatten()
        decisions = (cold[_DECIDED], split[_DECIDED]) | "Decisions" >> beam.Flatten()
        return survivors, decisions


Scored = tuple[str, float]
"""(key, closeness) of a node's strongest edge: what a similarity drop reports."""


def _decide(
    element: tuple[str, dict[str, list[Any]]],
    reason: RejectReason,
    detail: str,
    limit: float | None,
) -> Iterator[tuple[str, Decision]]:
    _, joined = element
    for node, label in joined["label"]:
        if node != label:
            values = joined["value"]
            value = values[0] if values else None
            yield node[-1], Decision(reason, label[-1], detail, value, limit)


def _undecided(element: tuple[str, dict[str, list[Any]]]) -> Iterator[Profile]:
    _, joined = element
    if not joined["decision"]:
        yield from joined["profile"]


class WithoutDecided(beam.PTransform):
    """The profiles that have no decision (a join by key)."""

    def __init__(self, decisions: beam.PCollection) -> None:
        super().__init__()
        self.decisions = decisions

    def expand(self, profiles: beam.PCollection) -> beam.PCollection:
        return (
            {
                "profile": profiles | "ByKey" >> beam.Map(lambda p: (p.key, p)),
                "decision": self.decisions,
            }
            | "Join" >> beam.CoGroupByKey()
            | "Undecided" >> beam.FlatMap(_undecided)
        )


def _best_edge_values(
    edge: tuple[Rank, Rank, float] | tuple[Rank, Rank],
) -> Iterator[tuple[str, float]]:
    if len(edge) == 3:
        a, b, value = edge
        yield a[-1], float(value)
        yield b[-1], float(value)


def _plain_edge(edge: tuple[Any, ...]) -> tuple[Rank, Rank]:
    return edge[0], edge[1]


class SimilarityStage(beam.PTransform):
    """Edges from `edges` (a PTransform on profiles) → clusters → one survivor each.

    Edges are (Rank, Rank) or (Rank, Rank, closeness); with a closeness, each drop carries
    the closeness of its strongest edge as the decision's value (the best of which is
    `max` when `higher_is_closer`, else `min`), and `limit` as its limit.
    """

    def __init__(
        self,
        edges: beam.PTransform,
        reason: RejectReason,
        detail: str,
        rounds: int,
        *,
        limit: float | None = None,
        higher_is_closer: bool = True,
        hub_degree: int = DEFAULT_CAP,
    ) -> None:
        super().__init__()
        self.edges = edges
        self.reason = reason
        self.detail = detail
        self.rounds = rounds
        self.limit = limit
        self.closest = max if higher_is_closer else min
        self.hub_degree = hub_degree

    def expand(self, profiles: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        edges = profiles | "Edges" >> self.edges
        labels = (
            edges
            | "PlainEdges" >> beam.Map(_plain_edge)
            | "Clusters" >> ConnectedComponents(self.rounds, self.hub_degree)
            | "LabelByKey" >> beam.Map(lambda nl: (nl[0][-1], nl))
        )
        values = (
            edges
            | "EdgeValues" >> beam.FlatMap(_best_edge_values)
            | "StrongestEdge" >> beam.CombinePerKey(self.closest)
        )
        decisions = (
            {"label": labels, "value": values}
            | "JoinValues" >> beam.CoGroupByKey()
            | "Decide" >> beam.FlatMap(_decide, self.reason, self.detail, self.limit)
        )
        survivors = profiles | "Survivors" >> WithoutDecided(decisions)
        return survivors, decisions
