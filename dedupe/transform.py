"""`Deduplicate`: the whole dedupe stage as one Beam transform on records.

Records are shuffled by key once at the end (to apply decisions); every stage in between works
on compact profiles. Settled (rejected) records pass through unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from dedupe.caption import CaptionEdges
from dedupe.config import DedupeConfig
from dedupe.decisions import Decision, decision_order
from dedupe.decontaminate import ContaminationDecisions, EvalImage, EvalSets
from dedupe.perceptual import PerceptualStage
from dedupe.profile import Profile, best_profile, profile_of, record_order, thin
from dedupe.semantic import SemanticEdges
from dedupe.stages import ExactStage, SimilarityStage, WithoutDecided
from lait.record import NAMESPACE, Record, RejectReason, Status


class _LiveOrSettled(beam.PartitionFn):
    def partition_for(self, element: Any, num_partitions: int, *args: Any, **kwargs: Any) -> int:
        record: Record = element
        return 0 if record.status is Status.CANDIDATE else 1


def settle(element: tuple[str, dict[str, list[Any]]], collapse_keys: bool) -> Iterator[Record]:
    """Apply the decisions for one key to its records.

    With `collapse_keys`, records sharing the key (same url and caption) keep one, chosen by
    the keep policy, as the stages' profiles did; otherwise all records of the key share
    its fate.
    """
    key, joined = element
    records = sorted(joined["record"], key=record_order)
    decisions: list[Decision] = sorted(joined["decision"], key=decision_order)
    if collapse_keys:
        for duplicate in records[1:]:
            Metrics.counter(NAMESPACE, f"dedupe.{RejectReason.DUPLICATE_URL_CAPTION}").inc()
            yield duplicate.rejected(
                RejectReason.DUPLICATE_URL_CAPTION, "same url and caption", duplicate_of=key
            )
        records = records[:1]
    for record in records:
        if decisions:
            decision = decisions[0]
            Metrics.counter(NAMESPACE, f"dedupe.{decision.reason}").inc()
            yield record.rejected(
                decision.reason,
                decision.detail,
                duplicate_of=decision.survivor,
                value=decision.value,
                limit=decision.limit,
            )
        else:
            yield record


class Deduplicate(beam.PTransform):
    """Records → records: live duplicates become rejected with a `duplicate_*` reason.

    `embeddings` (a PCollection of (record key, numpy vector)) feeds the semantic stage when
    `config.semantic`; `eval_images` (a list of `EvalImage`) adds to `config.eval_images`.
    """

    def __init__(
        self,
        config: DedupeConfig | None = None,
        *,
        embeddings: beam.PCollection | None = None,
        eval_images: Sequence[EvalImage] = (),
        collapse_keys: bool = True,
    ) -> None:
        super().__init__()
        self.config = config or DedupeConfig()
        self.embeddings = embeddings
        self.eval_images = list(eval_images)
        self.collapse_keys = collapse_keys
        if self.config.semantic and embeddings is None:
            raise ValueError(
                "the semantic stage needs embeddings: pass Deduplicate(config, embeddings=...) "
                "a PCollection of (key, vector), or turn semantic off"
            )

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        config = self.config
        live, settled = records | "LiveOrSettled" >> beam.Partition(_LiveOrSettled(), 2)
        keyed = live | "ByKey" >> beam.Map(lambda r: (r.key, r))
        profiles = (
            keyed
            | "Profile" >> beam.MapTuple(lambda k, r: (k, profile_of(r)))
            | "BestOfKey" >> beam.CombinePerKey(lambda ps: _best(ps))
            | "Profiles" >> beam.Values()
        )
        decisions = []
        # The exact stages need no thumbnail: they move thin profiles, and the perceptual
        # stage joins the thumbnails back for its buckets (dedupe/profile.py).
        thumbnails = profiles | "Thumbnails" >> beam.FlatMap(_key_and_thumbnail)
        whole, profiles = profiles, profiles | "Thin" >> beam.Map(thin, config.colour_threshold)

        evals = self._eval_sets(records.pipeline)
        if evals is not None:
            eval_images, eval_texts = evals
            contaminated = whole | "Decontaminate" >> ContaminationDecisions(
                eval_images,
                eval_texts,
                config.eval_phash_threshold,
                config.colour_threshold,
                caption_threshold=config.eval_caption_threshold,
                caption_shingle_words=config.eval_caption_shingle_words,
                caption_min_words=config.eval_caption_min_words,
            )
            decisions.append(contaminated)
            profiles = profiles | "NotContaminated" >> WithoutDecided(contaminated)
        cap = config.bucket_cap
        if config.url:
            profiles, dropped = profiles | "SameUrl" >> ExactStage(
                lambda p: p.url or None, RejectReason.DUPLICATE_URL, "same image url", cap
            )
            decisions.append(dropped)
        if config.sha256:
            profiles, dropped = profiles | "SameBytes" >> ExactStage(
                lambda p: p.sha256, RejectReason.DUPLICATE_EXACT, "same image bytes (sha256)", cap
            )
            decisions.append(dropped)
        if config.perceptual:
            profiles, dropped = profiles | "Perceptual" >> PerceptualStage(config, thumbnails)
            decisions.append(dropped)
        if config.caption:
            edges: beam.PTransform = CaptionEdges(
                config.caption_threshold,
                config.caption_shingle_words,
                config.caption_min_words,
                config.caption_num_perm,
                config.caption_bands,
            )
            profiles, dropped = profiles | "NearCaption" >> SimilarityStage(
                edges,
                RejectReason.DUPLICATE_CAPTION,
                f"near-duplicate caption (Jaccard >= {config.caption_threshold})",
                config.component_rounds,
                limit=config.caption_threshold,
                hub_degree=cap,
            )
            decisions.append(dropped)
        if config.semantic:
            assert self.embeddings is not None  # checked in __init__
            edges = SemanticEdges(
                self.embeddings,
                config.semantic_threshold,
                config.semantic_clusters,
                config.semantic_sample,
                config.semantic_iterations,
                config.semantic_cluster_size,
                config.semantic_max_clusters,
                config.semantic_cluster_cap,
            )
            profiles, dropped = profiles | "NearMeaning" >> SimilarityStage(
                edges,
                RejectReason.DUPLICATE_SEMANTIC,
                f"semantic duplicate (cosine >= {config.semantic_threshold})",
                config.component_rounds,
                limit=config.semantic_threshold,
                hub_degree=cap,
            )
            decisions.append(dropped)

        all_decisions = (
            decisions | "AllDecisions" >> beam.Flatten()
            if decisions
            else records.pipeline | "NoDecisions" >> beam.Create([])
        )
        decided = (
            {
                # The profiles hold the colour thumbnails now; the records need them no more.
                "record": keyed | "DropThumbnails" >> beam.MapTuple(_without_thumbnail),
                "decision": all_decisions,
            }
            | "JoinDecisions" >> beam.CoGroupByKey()
            | "Settle" >> beam.FlatMap(settle, self.collapse_keys)
        )
        return (settled, decided) | "AllRecords" >> beam.Flatten()

    def _eval_sets(
        self, pipeline: beam.Pipeline
    ) -> tuple[beam.PCollection, beam.PCollection | None] | None:
        images, texts = [], None
        if self.eval_images:
            images.append(pipeline | "GivenEvalImages" >> beam.Create(self.eval_images))
        if self.config.eval_images:
            read, texts = pipeline | "ReadEvalSets" >> EvalSets(self.config.eval_images)
            images.append(read)
        if not images:
            return None
        return images | "EvalImages" >> beam.Flatten(), texts


def _key_and_thumbnail(profile: Profile) -> Iterator[tuple[str, bytes]]:
    if profile.thumbnail is not None:
        yield profile.key, profile.thumbnail


def _without_thumbnail(key: str, record: Record) -> tuple[str, Record]:
    if record.colour_thumbnail is None:
        return key, record
    return key, dataclasses.replace(record, colour_thumbnail=None)


def _best(profiles: Any) -> Any:
    best = None
    for profile in profiles:
        best = profile if best is None else best_profile(best, profile)
    return best


class Decontaminate(beam.PTransform):
    """Records → records: live ones matching an evaluation image become EVAL_CONTAMINATION.

    Give `eval_images` (hashed `EvalImage`s) and/or `paths` (files or folders, read on the
    workers). Counted as `dedupe.eval_contamination` in the "lait" namespace.
    """

    def __init__(
        self,
        eval_images: Sequence[EvalImage] = (),
        *,
        paths: Sequence[str] = (),
        config: DedupeConfig | None = None,
    ) -> None:
        super().__init__()
        base = config or DedupeConfig()
        self.config = dataclasses.replace(
            base,
            url=False,
            sha256=False,
            perceptual=False,
            caption=False,
            semantic=False,
            eval_images=tuple(paths) or base.eval_images,
        )
        self.eval_images = list(eval_images)
        if not self.eval_images and not self.config.eval_images:
            raise ValueError("Decontaminate needs evaluation images (eval_images or paths)")

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return records | "Dedupe" >> Deduplicate(
            self.config, eval_images=self.eval_images, collapse_keys=False
        )
