"""`LanguageFilter`: label each live caption's language with fastText and keep the wanted ones.

The model loads once per worker (`setup`) and predicts a batch per call, which is where
fastText is fast; per record there is only a dictionary lookup and a copy.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import apache_beam as beam

from lait.models.langid import LABEL_PREFIX, LanguageIdentifier
from lait.record import Record, RejectReason, Status
from pipeline.langid.config import LanguageConfig

NAMESPACE = "lait"

# A labelled copy of a record without `dataclasses.replace`, which costs more per record
# than fastText's own prediction: read every field in C, swap two, construct positionally.
_FIELDS = tuple(f.name for f in dataclasses.fields(Record))
_ALL_VALUES = operator.attrgetter(*_FIELDS)
_LANGUAGE, _LANGUAGE_SCORE = _FIELDS.index("language"), _FIELDS.index("language_score")


def with_language(record: Record, language: str | None, score: float | None) -> Record:
    """`record` with `language` and `language_score` set (same as `dataclasses.replace`)."""
    values = list(_ALL_VALUES(record))
    values[_LANGUAGE], values[_LANGUAGE_SCORE] = language, score
    return Record(*values)


@dataclass(frozen=True)
class LanguageVerdict:
    """The language recorded for a caption, its probability, and a reason if rejected."""

    language: str | None
    score: float | None
    reason: RejectReason | None = None
    detail: str | None = None


def decide_language(scores: dict[str, float], wanted: dict[str, float]) -> LanguageVerdict:
    """Keep the likeliest wanted language that reaches its minimum; otherwise say why not.

    `scores` is {language: probability} of the top-k predictions, likeliest first.
    """
    top = next(iter(scores.items()), None)
    if not wanted:
        return LanguageVerdict(top[0], top[1]) if top else LanguageVerdict(None, None)
    best: tuple[str, float] | None = None
    for language, minimum in wanted.items():
        probability = scores.get(language)
        reaches = probability is not None and probability >= minimum
        if reaches and (best is None or probability > best[1]):  # type: ignore[operator]
            best = (language, probability)  # type: ignore[assignment]
    if best is not None:
        return LanguageVerdict(best[0], best[1])
    shown = ", ".join(f"{lang} {p:.3f}" for lang, p in scores.items())
    if top is None:
        return LanguageVerdict(None, None, RejectReason.WRONG_LANGUAGE, "no prediction")
    if top[0] in wanted:
        return LanguageVerdict(top[0], top[1], RejectReason.LOW_LANGUAGE_CONFIDENCE, shown)
    return LanguageVerdict(top[0], top[1], RejectReason.WRONG_LANGUAGE, shown)


class IdentifyLanguage(beam.DoFn):
    """Batches of records in; each out with its language set, or rejected for it."""

    def __init__(self, config: LanguageConfig) -> None:
        self.config = config

    def setup(self) -> None:
        self.identifier = LanguageIdentifier(self.config.model_path, k=self.config.top_k)
        self.wanted = {lang: float(m) for lang, m in self.config.languages.items()}
        self.wanted_labels = {LABEL_PREFIX + lang: m for lang, m in self.wanted.items()}
        self.counters = {
            outcome: beam.metrics.Metrics.counter(NAMESPACE, f"language.{outcome}")
            for outcome in (
                "passed",
                RejectReason.WRONG_LANGUAGE.value,
                RejectReason.LOW_LANGUAGE_CONFIDENCE.value,
            )
        }

    def process(self, batch: Sequence[Record]) -> Iterator[Record]:
        live = [r for r in batch if r.status is Status.CANDIDATE]
        labels, probabilities = self.identifier.predict_labels([r.caption for r in live])
        counts = dict.fromkeys(self.counters, 0)  # counters bumped once per batch: cheaper
        wanted, cut = self.wanted_labels, len(LABEL_PREFIX)
        i = 0
        for record in batch:
            if record.status is not Status.CANDIDATE:
                yield record
                continue
            row_labels, row_probabilities = labels[i], probabilities[i]
            i += 1
            if wanted:  # fast path: the likeliest wanted language that reaches its minimum
                best, best_p = None, -1.0
                for label, p in zip(row_labels, row_probabilities, strict=True):
                    minimum = wanted.get(label)
                    if minimum is not None and p >= minimum and p > best_p:
                        best, best_p = label, p
                if best is not None:
                    counts["passed"] += 1
                    yield with_language(record, best[cut:], best_p)
                    continue
            scores = {
                label[cut:]: p for label, p in zip(row_labels, row_probabilities, strict=True)
            }
            verdict = decide_language(scores, self.wanted)
            labelled = with_language(record, verdict.language, verdict.score)
            if verdict.reason is None:
                counts["passed"] += 1
                yield labelled
            else:
                counts[verdict.reason.value] += 1
                yield labelled.rejected(verdict.reason, verdict.detail)
        for outcome, count in counts.items():
            if count:
                self.counters[outcome].inc(count)


class LanguageFilter(beam.PTransform):
    """Records in, records out: settled ones unchanged, live ones labelled or rejected."""

    def __init__(self, config: LanguageConfig | None = None) -> None:
        super().__init__()
        self.config = config or LanguageConfig()

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | "Batch"
            >> beam.BatchElements(min_batch_size=16, max_batch_size=self.config.max_batch_size)
            | "Identify" >> beam.ParDo(IdentifyLanguage(self.config))
        )
