"""Connected components of a similarity graph as Beam stages (min-label propagation).

Nodes are keep-policy ranks (`dedupe.profile.Rank`, which end with the record key), so the
smallest label a component reaches is its survivor. Each round sends every node's label
along its edges and keeps the smallest label a node receives (a CombinePerKey, lifted
before the shuffle, so a node with a million edges is never held whole). A label moves one
hop per round, and buckets emit spanning stars, so clusters settle in a few rounds. A cluster
whose diameter exceeds the rounds is not merged wrongly: its nodes still carry the best label
they can reach (so it may keep two survivors), and `dedupe.unsettled_labels` counts them.

Hubs: a node with more than `hub_degree` edges (the centre of a hot bucket's star) never has
its edge list grouped; each of its ordinary neighbours pulls the hub's label from a side input
that holds only hubs' labels (at most 2 * edges / hub_degree entries), and its own label
reaches the hub through the combiner. Every grouped edge list is at most `hub_degree` long
(plus the hub-to-hub edges of a hub, at most one per hub).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from dedupe.profile import Rank
from lait.record import NAMESPACE

Edge = tuple[Rank, Rank]
DEFAULT_HUB_DEGREE = 2048


def _both_ways(edge: Edge) -> Iterator[tuple[Rank, Rank]]:
    a, b = edge
    if a != b:
        yield a, b
        yield b, a


def _hubs(element: tuple[Rank, int], hub_degree: int) -> Iterator[tuple[Rank, bool]]:
    node, degree = element
    if degree > hub_degree:
        Metrics.counter(NAMESPACE, "dedupe.hub_nodes").inc()
        yield node, True


def _no_hub_fan_out(arc: tuple[Rank, Rank], hubs: dict[Rank, Any]) -> Iterator[tuple[Rank, Rank]]:
    # A hub's arcs to ordinary nodes are not grouped: each such node pulls the hub's label
    # from the side input instead (the hub is in its own, bounded, neighbour list).
    if arc[0] not in hubs or arc[1] in hubs:
        yield arc


def _neighbours(element: tuple[Rank, Iterable[Rank]]) -> tuple[Rank, list[Rank]]:
    node, others = element
    return node, sorted(set(others))


def _spread(
    element: tuple[Rank, dict[str, list[Any]]], hub_labels: dict[Rank, Any], first: bool
) -> Iterator[tuple[Rank, Rank]]:
    node, joined = element
    if not joined["label"]:
        return
    label = min(joined["label"])
    yield node, label
    for neighbours in joined["adjacency"]:
        for neighbour in neighbours:
            yield neighbour, label  # push: a hub receives through the combiner
            if neighbour in hub_labels:  # pull a hub's label (its own in the first round)
                yield node, neighbour if first else hub_labels[neighbour]


def _hub_label(element: tuple[Rank, Rank], hubs: dict[Rank, Any]) -> Iterator[tuple[Rank, Rank]]:
    if element[0] in hubs:
        yield element


def _count_unsettled(element: tuple[Rank, dict[str, list[Rank]]]) -> None:
    _, joined = element
    if set(joined["before"]) != set(joined["after"]):
        Metrics.counter(NAMESPACE, "dedupe.unsettled_labels").inc()


class ConnectedComponents(beam.PTransform):
    """Edges (Rank, Rank) → (node, label): the best rank reachable within the rounds."""

    def __init__(self, rounds: int, hub_degree: int = DEFAULT_HUB_DEGREE) -> None:
        super().__init__()
        self.rounds = rounds
        self.hub_degree = hub_degree

    def expand(self, edges: beam.PCollection) -> beam.PCollection:
        arcs = edges | "BothWays" >> beam.FlatMap(_both_ways)
        degrees = (
            arcs | "Ones" >> beam.Map(lambda arc: (arc[0], 1)) | "Degree" >> beam.CombinePerKey(sum)
        )
        hubs = beam.pvalue.AsDict(degrees | "Hubs" >> beam.FlatMap(_hubs, self.hub_degree))
        adjacency = (
            arcs
            | "NoHubFanOut" >> beam.FlatMap(_no_hub_fan_out, hubs)
            | "GroupNeighbours" >> beam.GroupByKey()
            | "Neighbours" >> beam.Map(_neighbours)
        )
        labels = degrees | "FirstLabel" >> beam.Map(lambda nd: (nd[0], nd[0]))
        before = labels
        for round_ in range(self.rounds + 1):
            before = labels
            # the first round's hub labels are the hubs themselves (`_spread` knows)
            hub_labels = (
                hubs
                if round_ == 0
                else beam.pvalue.AsDict(
                    labels | f"HubLabels{round_}" >> beam.FlatMap(_hub_label, hubs)
                )
            )
            labels = (
                {"adjacency": adjacency, "label": labels}
                | f"Join{round_}" >> beam.CoGroupByKey()
                | f"Spread{round_}" >> beam.FlatMap(_spread, hub_labels, round_ == 0)
                | f"Min{round_}" >> beam.CombinePerKey(min)
            )
        _ = (
            {"before": before, "after": labels}
            | "CompareLastRound" >> beam.CoGroupByKey()
            | "CountUnsettled" >> beam.Map(_count_unsettled)
        )
        return labels
