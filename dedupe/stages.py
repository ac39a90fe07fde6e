"""The two shapes of dedupe stage, over profiles: exact (group by a value) and similarity
(edges from LSH buckets → connected components → one survivor per cluster).

Each stage returns (survivors, decisions): the profiles it kept, for the next stage, and
(key, Decision) for every profile it dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam

from dedupe.components import ConnectedComponents
from dedupe.decisions import Decision
from dedupe.profile import Profile, Rank
from lait.record import RejectReason

_DECIDED = "decided"


def _exact_groups(
    element: tuple[Any, Iterable[Profile]], reason: RejectReason, detail: str
) -> Iterator[Any]:
    _, members = element
    ordered = sorted(members, key=lambda p: p.order)
    keeper = ordered[0]
    yield keeper
    for profile in ordered[1:]:
        yield beam.pvalue.TaggedOutput(
            _DECIDED, (profile.key, Decision(reason, keeper.key, detail))
        )


class _HasValue(beam.PartitionFn):
    def __init__(self, value: Callable[[Profile], Any]) -> None:
        self.value = value

    def partition_for(self, element: Any, num_partitions: int, *args: Any, **kwargs: Any) -> int:
        return 0 if self.value(element) is not None else 1


class ExactStage(beam.PTransform):
    """Profiles sharing `value(profile)` (not None) form one cluster; the best survives."""

    def __init__(self, value: Callable[[Profile], Any], reason: RejectReason, detail: str) -> None:
        super().__init__()
        self.value = value
        self.reason = reason
        self.detail = detail

    def expand(self, profiles: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        value = self.value
        valued, unvalued = profiles | "HasValue" >> beam.Partition(_HasValue(value), 2)
        grouped = (
            valued
            | "ByValue" >> beam.Map(lambda p: (value(p), p))
            | "Group" >> beam.GroupByKey()
            | "KeepBest"
            >> beam.FlatMap(_exact_groups, self.reason, self.detail).with_outputs(
                _DECIDED, main="kept"
            )
        )
        survivors = (grouped.kept, unvalued) | "Survivors" >> beam.Flatten()
        return survivors, grouped[_DECIDED]


def _decide(
    element: tuple[Rank, Rank], reason: RejectReason, detail: str
) -> Iterator[tuple[str, Decision]]:
    node, label = element
    if node != label:
        yield node[-1], Decision(reason, label[-1], detail)


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


class SimilarityStage(beam.PTransform):
    """Edges from `edges` (a PTransform on profiles) → clusters → one survivor each."""

    def __init__(
        self, edges: beam.PTransform, reason: RejectReason, detail: str, rounds: int
    ) -> None:
        super().__init__()
        self.edges = edges
        self.reason = reason
        self.detail = detail
        self.rounds = rounds

    def expand(self, profiles: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        decisions = (
            profiles
            | "Edges" >> self.edges
            | "Clusters" >> ConnectedComponents(self.rounds)
            | "Decide" >> beam.FlatMap(_decide, self.reason, self.detail)
        )
        survivors = profiles | "Survivors" >> WithoutDecided(decisions)
        return survivors, decisions
