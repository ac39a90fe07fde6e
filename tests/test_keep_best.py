"""Per-key choices that hold for hot keys: `dedupe.keep_best` on the DirectRunner."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from dedupe.keep_best import GROUP_SIZE_METRIC, JoinOne, KeepBestPerKey, salt_of


def _keep_best(members, hot_cap):
    return members | KeepBestPerKey(
        key_of=lambda m: m[0],
        rank_of=lambda m: (m[2],),
        id_of=lambda m: m[1],
        lose=lambda m, rank, winner: (m[0], m[1], m[2], f"lost to {winner}"),
        hot_cap=hot_cap,
    )


@pytest.mark.parametrize("hot_cap", [2, 1000])
def test_keep_best_keeps_the_smallest_rank_per_key_hot_or_not(hot_cap):
    members = [("a", f"a{i}", 10 - i) for i in range(7)] + [("b", "b0", 5), (None, "n0", 1)]
    expected = [("a", "a6", 4)] + [("a", f"a{i}", 10 - i, "lost to a6") for i in range(6)]
    expected += [("b", "b0", 5), (None, "n0", 1)]
    with beam.Pipeline() as p:
        out = _keep_best(p | beam.Create(members), hot_cap)
        assert_that(out, equal_to(expected))


def test_the_same_sighting_twice_keeps_one():
    members = [("k", "same", 1), ("k", "same", 1), ("k", "other", 2)]
    with beam.Pipeline() as p:
        out = _keep_best(p | beam.Create(members), hot_cap=1)
        kept = out | beam.Filter(lambda m: len(m) == 3) | beam.combiners.Count.Globally()
        assert_that(kept, equal_to([1]))


def test_join_one_gives_every_member_its_keys_value_and_none_without():
    many = [("u", i) for i in range(9)] + [("v", 100)]
    with beam.Pipeline() as p:
        joined = {
            "many": p | "Many" >> beam.Create(many),
            "one": p | "One" >> beam.Create([("u", "img-u")]),
        } | JoinOne(lambda m, v: [(m, v)], member_id=str, hot_cap=2)
        assert_that(joined, equal_to([(i, "img-u") for i in range(9)] + [(100, None)]))


def test_salt_is_stable_and_in_range():
    assert salt_of("x", 1) == 0
    assert salt_of("abc", 7) == salt_of("abc", 7)
    assert {salt_of(str(i), 5) for i in range(200)} == set(range(5))


def test_200k_members_of_one_key_are_settled_in_bounded_groups():
    """A logo with the same alt on 200,000 pages: one winner, 199,999 losers, and no worker
    ever holds more than ~hot_cap of them at once (the join's largest group)."""
    n, hot_cap = 200_000, 10_000
    pipeline = beam.Pipeline()
    members = (
        pipeline
        | beam.Create([0])
        | beam.FlatMap(lambda _: (("logo", f"page{i:06d}", i % 977) for i in range(n)))
    )
    settled = _keep_best(members, hot_cap)
    kept = settled | "Kept" >> beam.Filter(lambda m: len(m) == 3)
    assert_that(kept, equal_to([("logo", "page000000", 0)]), label="OneWinner")
    total = settled | beam.combiners.Count.Globally()
    assert_that(total, equal_to([n]), label="NothingLost")
    result = pipeline.run()
    result.wait_until_finish()
    sizes = result.metrics().query(MetricsFilter().with_name(GROUP_SIZE_METRIC))["distributions"]
    largest = max(d.committed.max for d in sizes)
    assert largest <= 1.2 * hot_cap, largest
