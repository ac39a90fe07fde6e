"""`LanguageFilter`: label each live caption's language with fastText and keep the wanted ones.

The model loads once per worker (`setup`) and predicts a batch per call, which is where
fastText is fast; per record there is only a dictionary lookup and a copy.

Most captions of a crawl aimed at some languages are plainly in one of them, and then their
likeliest language alone settles the verdict: it is the likeliest wanted language there is.
So a batch is first asked for each caption's top language only (fastText's k=1, about half
the cost of the top 3 on lid.176's hierarchical softmax); the captions that this does not
settle are asked again for the full top k. Verdicts and scores are those of a single top-k
pass (fastText computes each label's probability the same way whatever k is), bar exact ties
between probabilities, where fastText's own order is arbitrary. When too few captions are
settled by the first pass (a mostly foreign crawl), two passes would cost more than one, so a
worker then goes back to the single top-k pass until its batches say otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import apache_beam as beam

from lait.models.langid import LABEL_PREFIX, LanguageIdentifier
from lait.record import NAMESPACE, Record, RejectReason, Status, make_replacer
from pipeline.langid.config import LanguageConfig

# A labelled copy of a record: `dataclasses.replace` costs more per record than fastText.
with_language = make_replacer("language", "language_score")

# The share of captions the top-1 pass must settle to pay for itself: it costs about half a
# top-3 pass (bench/langid.py), and the unsettled rest pays for a top-3 pass as well.
TOP_FIRST_MIN_SETTLED = 0.6


@dataclass(frozen=True)
class LanguageVerdict:
    """The language recorded for a caption, its probability, and a reason if rejected."""

    language: str | None
    score: float | None
    reason: RejectReason | None = None
    detail: str | None = None
    limit: float | None = None  # the minimum `score` missed (LOW_LANGUAGE_CONFIDENCE)


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
        return LanguageVerdict(
            top[0], top[1], RejectReason.LOW_LANGUAGE_CONFIDENCE, shown, wanted[top[0]]
        )
    return LanguageVerdict(top[0], top[1], RejectReason.WRONG_LANGUAGE, shown)


class IdentifyLanguage(beam.DoFn):
    """Batches of records in; each out with its language set, or rejected for it."""

    def __init__(self, config: LanguageConfig) -> None:
        self.config = config

    def setup(self) -> None:
        self.identifier = LanguageIdentifier(self.config.model_path, k=self.config.top_k)
        self.wanted = {lang: float(m) for lang, m in self.config.languages.items()}
        # label -> (language code, minimum): one lookup per caption on the hot path
        self.wanted_labels = {LABEL_PREFIX + lang: (lang, m) for lang, m in self.wanted.items()}
        # a worker-local speed choice only: either way gives the same records
        self.top_first = True
        self.counters = {
            outcome: beam.metrics.Metrics.counter(NAMESPACE, f"language.{outcome}")
            for outcome in (
                "passed",
                RejectReason.WRONG_LANGUAGE.value,
                RejectReason.LOW_LANGUAGE_CONFIDENCE.value,
            )
        }

    def process(self, batch: Sequence[Record]) -> Iterator[Record]:
        counts = dict.fromkeys(self.counters, 0)  # counters bumped once per batch: cheaper
        live = [r for r in batch if r.status is Status.CANDIDATE]
        if not self.wanted:
            labelled = self._label_top(live, counts)
        elif self.top_first and self.config.top_k > 1:
            labelled = self._label_top_first(live, counts)
        else:
            labelled = self._label_top_k(live, counts)
        if len(live) == len(batch):
            yield from labelled
        else:  # settled records pass through, in their place
            out = iter(labelled)
            for record in batch:
                yield next(out) if record.status is Status.CANDIDATE else record
        for outcome, count in counts.items():
            if count:
                self.counters[outcome].inc(count)

    def _label_top(self, live: list[Record], counts: dict[str, int]) -> list[Record]:
        """No wanted list: every caption passes, labelled with its likeliest language."""
        labels, probabilities = self.identifier.predict_top([r.caption for r in live])
        cut = len(LABEL_PREFIX)
        counts["passed"] += len(live)
        return [
            with_language(record, label[cut:] if label is not None else None, p)
            for record, label, p in zip(live, labels, probabilities, strict=True)
        ]

    def _label_top_first(self, live: list[Record], counts: dict[str, int]) -> list[Record]:
        """Settle what the likeliest language settles; ask the top k for the rest."""
        labels, probabilities = self.identifier.predict_top([r.caption for r in live])
        wanted = self.wanted_labels
        out: list[Record | None] = []
        unsettled: list[int] = []
        for i, (record, label, p) in enumerate(zip(live, labels, probabilities, strict=True)):
            hit = wanted.get(label)  # type: ignore[arg-type]
            if hit is not None and p >= hit[1]:  # type: ignore[operator]
                out.append(with_language(record, hit[0], p))
            else:
                out.append(None)
                unsettled.append(i)
        counts["passed"] += len(live) - len(unsettled)
        if unsettled:
            rest = self._label_top_k([live[i] for i in unsettled], counts)
            for i, record in zip(unsettled, rest, strict=True):
                out[i] = record
        if live:
            self.top_first = 1 - len(unsettled) / len(live) >= TOP_FIRST_MIN_SETTLED
        return out  # type: ignore[return-value]

    def _label_top_k(self, live: list[Record], counts: dict[str, int]) -> list[Record]:
        """The likeliest wanted language among each caption's top k, or the reason why not."""
        labels, probabilities = self.identifier.predict_labels([r.caption for r in live])
        wanted, cut = self.wanted_labels, len(LABEL_PREFIX)
        out: list[Record] = []
        settled_by_top = 0  # what the top-1 pass would have settled: whether to go back to it
        for record, row_labels, row_probabilities in zip(live, labels, probabilities, strict=True):
            best: tuple[str, float] | None = None
            best_label, best_p = None, -1.0
            for label, p in zip(row_labels, row_probabilities, strict=True):
                hit = wanted.get(label)
                if hit is not None and p >= hit[1] and p > best_p:
                    best, best_label, best_p = hit, label, p
            if best is not None:
                settled_by_top += best_label is row_labels[0]
                counts["passed"] += 1
                out.append(with_language(record, best[0], best_p))
                continue
            scores = {
                label[cut:]: p for label, p in zip(row_labels, row_probabilities, strict=True)
            }
            verdict = decide_language(scores, self.wanted)
            labelled = with_language(record, verdict.language, verdict.score)
            if verdict.reason is None:
                counts["passed"] += 1
                out.append(labelled)
            else:
                counts[verdict.reason.value] += 1
                limit = verdict.limit
                out.append(
                    labelled.rejected(
                        verdict.reason,
                        verdict.detail,
                        value=verdict.score if limit is not None else None,
                        limit=limit,
                    )
                )
        if live and not self.top_first:
            self.top_first = settled_by_top / len(live) >= TOP_FIRST_MIN_SETTLED
        return out


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
