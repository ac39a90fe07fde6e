"""Per-key choices that hold when one key has a million members.

Two shapes, both built so that no worker ever holds more than `hot_cap` members of a key:

- `JoinOne`: many elements per key meet the one value of their key (a URL's fetched image
  meets every caption of that URL; a caption's count meets every record with it).
- `KeepBestPerKey`: of the records sharing a key, the best (smallest rank) stays; the others
  are settled by a function of the record and the winner. The winner is found by a combiner
  (`CombinePerKey`, lifted before the shuffle), never by sorting a group, and then joined
  back with `JoinOne`.

How a hot key stays bounded: the members of each key are counted by a combiner; keys with
more than `hot_cap` members are "hot" and their number is at most N / hot_cap, small enough
to go to every worker as a side input (key → fan-out). A hot key's members are spread over
`ceil(count / hot_cap)` salted sub-keys by a hash of their id, and its one value is copied to
each sub-key; every other key is one group as usual. A logo on 1M pages is then 100 groups
of 10,000 records, not one group of 1M.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import apache_beam as beam

from lait.record import NAMESPACE

DEFAULT_HOT_CAP = 10_000
# The members one worker holds at once for a key: its maximum shows the bound holds.
GROUP_SIZE_METRIC = "join.group_size"

T = TypeVar("T")
V = TypeVar("V")
_ONE = "one"
_MANY = "many"


def salt_of(member_id: str, fanout: int) -> int:
    """The sub-key (0..fanout-1) of a hot key's member: stable across runs and processes."""
    if fanout <= 1:
        return 0
    digest = hashlib.blake2b(member_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % fanout


def _fanout(count: int, hot_cap: int) -> int:
    return max(1, math.ceil(count / hot_cap))


class HotKeys(beam.PTransform):
    """(key, member) pairs → (key, fan-out) for the keys with more than `hot_cap` members."""

    def __init__(self, hot_cap: int) -> None:
        super().__init__()
        self.hot_cap = hot_cap

    def expand(self, pairs: beam.PCollection) -> beam.PCollection:
        hot_cap = self.hot_cap
        return (
            pairs
            | "Ones" >> beam.Map(lambda kv: (kv[0], 1))
            | "Count" >> beam.CombinePerKey(sum)
            | "Hot" >> beam.Filter(lambda kc: kc[1] > hot_cap)
            | "Fanout" >> beam.MapTuple(lambda k, c: (k, _fanout(c, hot_cap)))
        )


class _SaltedJoin(beam.PTransform):
    """{"many": (key, member), "one": (key, value)} → `on_group(key, members, value)` per
    (sub-)key group, hot keys spread over salted sub-keys with their value copied to each."""

    def __init__(
        self,
        on_group: Callable[[Hashable, list[Any], Any], Iterable[Any]],
        member_id: Callable[[Any], str],
        hot_cap: int,
    ) -> None:
        super().__init__()
        self.on_group = on_group
        self.member_id = member_id
        self.hot_cap = hot_cap

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        many, one = inputs[_MANY], inputs[_ONE]
        hot = beam.pvalue.AsDict(many | "HotKeys" >> HotKeys(self.hot_cap))
        member_id, on_group = self.member_id, self.on_group
        group_size = beam.metrics.Metrics.distribution(NAMESPACE, GROUP_SIZE_METRIC)

        def salt_member(kv: tuple[Hashable, Any], hot: dict[Hashable, int]) -> Any:
            key, member = kv
            return (key, salt_of(member_id(member), hot.get(key, 1))), (_MANY, member)

        def copy_one(kv: tuple[Hashable, Any], hot: dict[Hashable, int]) -> Iterator[Any]:
            key, value = kv
            for salt in range(hot.get(key, 1)):
                yield (key, salt), (_ONE, value)

        def merge_group(element: tuple[Any, Iterable[tuple[str, Any]]]) -> Iterable[Any]:
            (key, _), tagged = element
            members: list[Any] = []
            value, seen_one = None, False
            for tag, item in tagged:
                if tag == _ONE:
                    if seen_one:
                        raise ValueError(f"two values to join for key {key!r}")
                    value, seen_one = item, True
                else:
                    members.append(item)
            group_size.update(len(members))
            return on_group(key, members, value)

        return (
            (
                many | "SaltMany" >> beam.Map(salt_member, hot=hot),
                one | "CopyOne" >> beam.FlatMap(copy_one, hot=hot),
            )
            | "Tagged" >> beam.Flatten()
            | "Group" >> beam.GroupByKey()
            | "Merge" >> beam.FlatMap(merge_group)
        )


class JoinOne(beam.PTransform, Generic[T, V]):
    """{"many": (key, member), "one": (key, value)} → `merge(member, value_or_None)` for
    every member, in groups of at most about `hot_cap` members.

    `member_id(member)` spreads a hot key's members over sub-keys (members with the same id
    land together). A key may have no "one" value (merge gets None); it must not have two.
    """

    def __init__(
        self,
        merge: Callable[[T, V | None], Iterable[Any]],
        member_id: Callable[[T], str],
        hot_cap: int = DEFAULT_HOT_CAP,
    ) -> None:
        super().__init__()
        self.merge = merge
        self.member_id = member_id
        self.hot_cap = hot_cap

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        merge = self.merge

        def on_group(key: Hashable, members: list[T], value: V | None) -> Iterator[Any]:
            for member in members:
                yield from merge(member, value)

        return inputs | "Join" >> _SaltedJoin(on_group, self.member_id, self.hot_cap)


class _BestOf(beam.CombineFn):
    """The smallest (rank, id) of a key's members, and the sum of their weights:
    ((rank, id), total) from (rank, id, weight) inputs."""

    def create_accumulator(self) -> Any:
        return None, 0

    def add_input(self, accumulator: Any, candidate: Any) -> Any:
        best, total = accumulator
        chosen = candidate[:2]
        return (chosen if best is None or chosen < best else best), total + candidate[2]

    def merge_accumulators(self, accumulators: Iterable[Any]) -> Any:
        best, total = None, 0
        for candidate, weight in accumulators:
            total += weight
            if candidate is not None and (best is None or candidate < best):
                best = candidate
        return best, total

    def extract_output(self, accumulator: Any) -> Any:
        return accumulator


class _HasKey(beam.PartitionFn):
    def __init__(self, key_of: Callable[[Any], Hashable | None]) -> None:
        self.key_of = key_of

    def partition_for(self, element: Any, num_partitions: int, *args: Any, **kwargs: Any) -> int:
        return 0 if self.key_of(element) is not None else 1


class KeepBestPerKey(beam.PTransform, Generic[T]):
    """Members → members: per `key_of(member)` (None: the member passes untouched), the
    member with the smallest `(rank_of(member), id_of(member))` passes; every other one
    becomes `lose(member, winner_rank, winner_id)`.

    Ranks must be small comparable values (tuples of numbers and strings): they are what
    crosses the shuffle for the choice. Members with the same id as the winner (the same
    sighting twice) keep exactly one: they share a sub-key, and the first one wins.

    With `win`, the winner becomes `win(member, total)`, where total is the sum of
    `weight_of(member)` over its key (1 each by default): the copies a survivor stands for.
    """

    def __init__(
        self,
        key_of: Callable[[T], Hashable | None],
        rank_of: Callable[[T], Any],
        id_of: Callable[[T], str],
        lose: Callable[[T, Any, str], Any],
        hot_cap: int = DEFAULT_HOT_CAP,
        *,
        win: Callable[[T, int], Any] | None = None,
        weight_of: Callable[[T], int] | None = None,
    ) -> None:
        super().__init__()
        self.key_of = key_of
        self.rank_of = rank_of
        self.id_of = id_of
        self.lose = lose
        self.hot_cap = hot_cap
        self.win = win
        self.weight_of = weight_of

    def expand(self, members: beam.PCollection) -> beam.PCollection:
        key_of, rank_of, id_of, lose = self.key_of, self.rank_of, self.id_of, self.lose
        win = self.win or (lambda member, _: member)
        weight_of = self.weight_of or (lambda _: 1)
        keyed, unkeyed = members | "HasKey" >> beam.Partition(_HasKey(key_of), 2)
        pairs = keyed | "ByKey" >> beam.Map(lambda m: (key_of(m), m))
        winners = (
            pairs
            | "Rank" >> beam.MapTuple(lambda k, m: (k, (rank_of(m), id_of(m), weight_of(m))))
            | "Best" >> beam.CombinePerKey(_BestOf())
        )

        def on_group(
            key: Hashable, group: list[T], best: tuple[tuple[Any, str], int] | None
        ) -> Iterator[Any]:
            if best is None or best[0] is None:
                raise ValueError(f"KeepBestPerKey: no winner for key {key!r}")
            (rank, winner), total = best
            kept = False
            for member in group:
                if not kept and id_of(member) == winner and rank_of(member) == rank:
                    kept = True
                    yield win(member, total)
                else:
                    yield lose(member, rank, winner)

        joined = {_MANY: pairs, _ONE: winners} | "Join" >> _SaltedJoin(
            on_group, id_of, self.hot_cap
        )
        return (joined, unkeyed) | "All" >> beam.Flatten()
