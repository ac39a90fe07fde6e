"""Connected components of a similarity graph as Beam stages (min-label propagation).

Nodes are keep-policy ranks (`dedupe.profile.Rank`, which end with the record key), so the
smallest label a component reaches is its survivor. Each round is one CoGroupByKey and one
CombinePerKey over the nodes that have edges; singletons never enter. A label moves one hop
per round, and buckets emit spanning stars, so clusters settle in a few rounds. A cluster
whose diameter exceeds the rounds is not merged wrongly: its nodes still carry the best label
they can reach (so it may keep two survivors), and `dedupe.unsettled_labels` counts them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from dedupe.profile import Rank
from pipeline.outcomes import NAMESPACE

Edge = tuple[Rank, Rank]


def _both_ways(edge: Edge) -> Iterator[tuple[Rank, Rank]]:
    a, b = edge
    if a != b:
        yield a, b
        yield b, a


def _neighbours(element: tuple[Rank, Iterable[Rank]]) -> tuple[Rank, list[Rank]]:
    node, others = element
    return node, sorted(set(others))


def _spread(element: tuple[Rank, dict[str, list[Any]]]) -> Iterator[tuple[Rank, Rank]]:
    node, joined = element
    label = min(joined["label"])
    yield node, label
    for neighbours in joined["adjacency"]:
        for neighbour in neighbours:
            yield neighbour, label


def _count_unsettled(element: tuple[Rank, dict[str, list[Rank]]]) -> None:
    _, joined = element
    if set(joined["before"]) != set(joined["after"]):
        Metrics.counter(NAMESPACE, "dedupe.unsettled_labels").inc()


class ConnectedComponents(beam.PTransform):
    """Edges (Rank, Rank) → (node, label): the best rank reachable within the rounds."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.rounds = rounds

    def expand(self, edges: beam.PCollection) -> beam.PCollection:
        adjacency = (
            edges
            | "BothWays" >> beam.FlatMap(_both_ways)
            | "GroupNeighbours" >> beam.GroupByKey()
            | "Neighbours" >> beam.Map(_neighbours)
        )
        labels = adjacency | "FirstLabel" >> beam.MapTuple(lambda n, ns: (n, min([n, *ns])))
        before = labels
        for round_ in range(self.rounds):
            before = labels
            labels = (
                {"adjacency": adjacency, "label": labels}
                | f"Join{round_}" >> beam.CoGroupByKey()
                | f"Spread{round_}" >> beam.FlatMap(_spread)
                | f"Min{round_}" >> beam.CombinePerKey(min)
            )
        _ = (
            {"before": before, "after": labels}
            | "CompareLastRound" >> beam.CoGroupByKey()
            | "CountUnsettled" >> beam.Map(_count_unsettled)
        )
        return labels
