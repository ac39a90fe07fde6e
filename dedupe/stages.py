"""The two shapes of dedupe stage, over profiles: exact (group by a value) and similarity
(edges from LSH buckets → connected components → one survivor per cluster).

Each stage returns (survivors, decisions): the profiles it kept, for the next stage, and
(key, Decision) for every profile it dropped.

No group of one value is ever held whole: the exact shape is `dedupe.keep_best.KeepBestPerKey`
(the one per-key choice of the whole pipeline): the best (rank, key) of each value and its
copies are a combiner over small tuples (lifted before the shuffle), values with more than
`cap` profiles ("hot": a site-wide logo, a white image) are spread over ceil(n / cap) salted
sub-keys (a side input holds only those values, at most N / cap entries), and the winner
is joined back to each sub-key: one shuffle of the profiles, groups of about `cap`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam

from dedupe.components import ConnectedComponents
from dedupe.decisions import Decision
from dedupe.keep_best import KeepBestPerKey
from dedupe.profile import Profile, Rank
from lait.record import RejectReason

_DECIDED = "decided"
_KEPT = "kept"
DEFAULT_CAP = 2048


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
        value = self.value
        valued, unvalued = profiles | "HasValue" >> beam.Partition(_HasValue(value), 2)
        by_value = valued | "ByValue" >> beam.Map(lambda p: (value(p), p))
        kept, decisions = by_value | "BestPerValue" >> BestPerValue(
            self.reason, self.detail, self.cap
        )
        survivors = (kept, unvalued) | "Survivors" >> beam.Flatten()
        return survivors, decisions


class BestPerValue(beam.PTransform):
    """(value, profile) pairs → (the best profile of each value, its `copies` the sum over
    the value, and (key, Decision) for the others): `KeepBestPerKey`, the pipeline's own
    per-key choice, so hot values are spread over salted sub-keys of at most about `cap`
    profiles (see the module doc)."""

    def __init__(self, reason: RejectReason, detail: str, cap: int = DEFAULT_CAP) -> None:
        super().__init__()
        self.reason = reason
        self.detail = detail
        self.cap = cap

    def expand(self, by_value: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        reason, detail = self.reason, self.detail

        def lose(pair: tuple[Any, Profile], _: Any, winner: str) -> tuple[str, Any]:
            return _DECIDED, (pair[1].key, Decision(reason, winner, detail))

        def win(pair: tuple[Any, Profile], copies: int) -> tuple[str, Any]:
            return _KEPT, dataclasses.replace(pair[1], copies=copies)

        settled = by_value | "KeepBest" >> KeepBestPerKey(
            key_of=lambda pair: pair[0],
            rank_of=lambda pair: pair[1].order,
            id_of=lambda pair: pair[1].key,
            lose=lose,
            hot_cap=self.cap,
            win=win,
            weight_of=lambda pair: pair[1].copies,
        )
        split = settled | "KeptOrDecided" >> beam.FlatMap(_kept_or_decided).with_outputs(
            _DECIDED, main=_KEPT
        )
        return split[_KEPT], split[_DECIDED]


def _kept_or_decided(tagged: tuple[str, Any]) -> Iterator[Any]:
    tag, value = tagged
    yield value if tag == _KEPT else beam.pvalue.TaggedOutput(_DECIDED, value)


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
    """The profiles that have no decision (a join by key), as `view(profile)` if given (what
    the next stages need, e.g. without the thumbnail: less to shuffle)."""

    def __init__(
        self, decisions: beam.PCollection, view: Callable[[Profile], Profile] | None = None
    ) -> None:
        super().__init__()
        self.decisions = decisions
        self.view = view

    def expand(self, profiles: beam.PCollection) -> beam.PCollection:
        view = self.view or (lambda p: p)
        return (
            {
                "profile": profiles | "ByKey" >> beam.Map(lambda p: (p.key, view(p))),
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


class _LeadersOfMember(beam.CombineFn):
    """A member's attachments → {leader: closest value}: at most one entry per band."""

    def __init__(self, closest: Callable[[float, float], float]) -> None:
        self.closest = closest

    def create_accumulator(self) -> dict[Rank, float]:
        return {}

    def add_input(self, accumulator: dict[Rank, float], edge: tuple[Any, ...]) -> dict[Rank, float]:
        leader, value = edge[0], float(edge[2])
        known = accumulator.get(leader)
        accumulator[leader] = value if known is None else self.closest(known, value)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[dict[Rank, float]]) -> dict[Rank, float]:
        merged: dict[Rank, float] = {}
        for accumulator in accumulators:
            for leader, value in accumulator.items():
                known = merged.get(leader)
                merged[leader] = value if known is None else self.closest(known, value)
        return merged

    def extract_output(self, accumulator: dict[Rank, float]) -> dict[Rank, float]:
        return accumulator


def _pendant_or_linked(element: tuple[Rank, dict[str, list[Any]]]) -> Iterator[Any]:
    """A member with one leader and no other edge is a pendant; else its attachments are
    ordinary edges of the graph."""
    member, joined = element
    for leaders in joined["leaders"]:
        if len(leaders) == 1 and not joined["linked"]:
            ((leader, value),) = leaders.items()
            yield beam.pvalue.TaggedOutput("pendant", (leader, member, value))
        else:
            for leader, value in sorted(leaders.items()):
                yield leader, member, value


def _pendant_label(
    pendant: tuple[Rank, Rank, float], labels: dict[Rank, Rank]
) -> tuple[Rank, Rank]:
    leader, member, _ = pendant
    return member, min(member, labels.get(leader, leader))


def _leader_label(
    element: tuple[Rank, Rank], leaders: dict[Rank, Any]
) -> Iterator[tuple[Rank, Rank]]:
    if element[0] in leaders:
        yield element


class SimilarityStage(beam.PTransform):
    """Edges from `edges` (a PTransform on profiles) → clusters → one survivor each.

    Edges are (Rank, Rank) or (Rank, Rank, closeness); with a closeness, each drop carries
    the closeness of its strongest edge as the decision's value (the best of which is
    `max` when `higher_is_closer`, else `min`), and `limit` as its limit.

    `edges` may return (edges, attachments): attachments are (leader, member, closeness)
    edges of a hot bucket's members to its leaders. A member attached to one leader and in
    no other edge (most of a hot bucket) is a pendant and stays out of the label rounds:
    only the best pendant of each leader joins them (which is all the leader's cluster
    needs to pick its survivor), and every pendant then takes its leader's label from a side
    input of leaders' labels (leaders are few). So a million near copies of a picture cost one
    pass, not `rounds` joins.
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
        survivor_view: Callable[[Profile], Profile] | None = None,
    ) -> None:
        super().__init__()
        self.survivor_view = survivor_view
        self.edges = edges
        self.reason = reason
        self.detail = detail
        self.rounds = rounds
        self.limit = limit
        self.closest = max if higher_is_closer else min
        self.hub_degree = hub_degree

    def expand(self, profiles: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        found = profiles | "Edges" >> self.edges
        edges, attachments = found if isinstance(found, tuple) else (found, None)
        pendants = None
        if attachments is not None:
            # in the graph anyway: both ends of an edge, and every leader (so a leader that is
            # itself attached to another bucket's leader links the two clusters)
            linked = (
                (
                    edges | "EdgeNodes" >> beam.FlatMap(lambda e: [(e[0], True), (e[1], True)]),
                    attachments | "LeaderNodes" >> beam.Map(lambda e: (e[0], True)),
                )
                | "AllLinked" >> beam.Flatten()
                | "Linked" >> beam.CombinePerKey(any)
            )
            leaders = (
                attachments
                | "ByMember" >> beam.Map(lambda e: (e[1], e))
                | "LeadersOfMember" >> beam.CombinePerKey(_LeadersOfMember(self.closest))
            )
            split = (
                {"leaders": leaders, "linked": linked}
                | "JoinLinked" >> beam.CoGroupByKey()
                | "PendantOrLinked"
                >> beam.FlatMap(_pendant_or_linked).with_outputs("pendant", main="linked")
            )
            pendants = split.pendant
            best_pendants = (
                pendants
                | "ByLeader" >> beam.Map(lambda e: (e[0], e))
                | "BestPendant" >> beam.CombinePerKey(lambda es: min(es, key=lambda e: e[1]))
                | "BestPendantEdge" >> beam.Values()
            )
            edges = (edges, split.linked, best_pendants) | "GraphEdges" >> beam.Flatten()
        labels = (
            edges
            | "PlainEdges" >> beam.Map(_plain_edge)
            | "Clusters" >> ConnectedComponents(self.rounds, self.hub_degree)
        )
        scored = edges
        if pendants is not None:
            leader_set = beam.pvalue.AsDict(
                pendants
                | "PendantLeaders" >> beam.Map(lambda e: (e[0], True))
                | "OneLeader" >> beam.CombinePerKey(any)
            )
            leader_labels = labels | "LeaderLabels" >> beam.FlatMap(_leader_label, leader_set)
            pendant_labels = pendants | "PendantLabels" >> beam.Map(
                _pendant_label, beam.pvalue.AsDict(leader_labels)
            )
            labels = (
                (labels, pendant_labels)
                | "AllLabels" >> beam.Flatten()
                | "OneLabel" >> beam.CombinePerKey(min)
            )
            scored = (edges, pendants) | "ScoredEdges" >> beam.Flatten()
        keyed_labels = labels | "LabelByKey" >> beam.Map(lambda nl: (nl[0][-1], nl))
        values = (
            scored
            | "EdgeValues" >> beam.FlatMap(_best_edge_values)
            | "StrongestEdge" >> beam.CombinePerKey(self.closest)
        )
        decisions = (
            {"label": keyed_labels, "value": values}
            | "JoinValues" >> beam.CoGroupByKey()
            | "Decide" >> beam.FlatMap(_decide, self.reason, self.detail, self.limit)
        )
        survivors = profiles | "Survivors" >> WithoutDecided(decisions, self.survivor_view)
        return survivors, decisions
