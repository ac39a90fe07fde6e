"""`ClipScore`: cosine similarity of each live pair's image and caption under a CLIP model,
and the content heads (non-natural, unsafe, watermark) on the same image embedding.

The model loads once per worker process (`apache_beam.utils.shared.Shared`: every DoFn
instance and thread of the process uses one copy, on the CPU or on the GPU that
`clip.device: cuda` names, with `clip.accelerator` as the step's Dataflow resource hint).
Records are spread over workers by image (a Reshuffle keyed by the image, so the captions
of one image stay together), batched, and each distinct image of a batch is decoded and
embedded once, whatever the number of its captions: they are all scored against the same
pixels. A record's pixels are its `image` bytes or, when the download stage staged them,
read from `image_ref` (`pipeline.staging.read_staged`). Records with neither have not been
downloaded and pass unchanged (counted), as do settled ones.

The model step itself is `pipeline.clip.scorer.ScoreWithClip`, imported only when a graph
scores with CLIP (torch and open_clip take seconds to import, on every worker).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.transforms.stats import ApproximateQuantiles

from dedupe.keep_best import DEFAULT_HOT_CAP, GROUP_SIZE_METRIC, HotKeys, salt_of
from lait.record import NAMESPACE, Record, RejectReason
from pipeline.clip.config import ClipConfig
from pipeline.clip.records import EMBEDDINGS_TAG, image_identity, scorable

_QUANTILES = 1001  # top-fraction cuts at 0.1 % resolution


def salted_by_image(record: Record, hot_images: dict[str, int]) -> tuple[tuple[str, int], Record]:
    """((image, sub-key), record): a hot image's records spread over its fan-out of
    sub-keys (by a hash of the record's key), every other image's records under sub-key 0."""
    image = image_identity(record)
    return (image, salt_of(record.key, hot_images.get(image, 1))), record


class _ChunksOfImage(beam.DoFn):
    """The records of one image's (sub-)group in lists of at most `size`, read lazily; the
    group's size goes to the `join.group_size` distribution, so its bound shows."""

    def __init__(self, size: int) -> None:
        self.size = size

    def setup(self) -> None:
        self.group_size = beam.metrics.Metrics.distribution(NAMESPACE, GROUP_SIZE_METRIC)

    def process(self, element: tuple[Any, Iterable[Record]]) -> Iterator[list[Record]]:
        chunk: list[Record] = []
        members = 0
        for record in element[1]:
            chunk.append(record)
            members += 1
            if len(chunk) == self.size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        self.group_size.update(members)


class RejectBelowCut(beam.DoFn):
    """Top-fraction policy: reject live scored records below their language's cut."""

    def setup(self) -> None:
        self.low = beam.metrics.Metrics.counter(NAMESPACE, f"clip.{RejectReason.LOW_CLIP_SCORE}")

    def process(self, record: Record, cuts: dict[str, float]) -> Iterator[Record]:
        if scorable(record) and record.clip_score is not None:
            cut = cuts.get(record.language or "")
            if cut is not None and record.clip_score < cut:
                self.low.inc()
                yield record.rejected(
                    RejectReason.LOW_CLIP_SCORE,
                    f"{record.clip_score:.4f} < top-fraction cut {cut:.4f}",
                    value=record.clip_score,
                    limit=cut,
                )
                return
        yield record


def _cut_of(config: ClipConfig, element: tuple[str, list[float]]) -> tuple[str, float]:
    language, quantiles = element
    keep = config.top_fraction_for(language or None)
    index = round((1.0 - keep) * (len(quantiles) - 1))
    return language, float(quantiles[index])


class _ScoreAll(beam.PTransform):
    def __init__(self, config: ClipConfig, hot_cap: int = DEFAULT_HOT_CAP) -> None:
        super().__init__()
        self.config = config
        self.hot_cap = hot_cap

    def expand(self, records: beam.PCollection) -> Any:
        config = self.config
        # Imported here, not at the top: the model step brings torch and open_clip, which a
        # graph without CLIP scoring (and its workers) never loads.
        from pipeline.clip.scorer import ScoreWithClip

        score = beam.ParDo(ScoreWithClip(config))
        if config.accelerator:
            # with_resource_hints returns the same ParDo (typed as a plain PTransform).
            score.with_resource_hints(accelerator=config.accelerator)
        size = config.batch_size
        # The fusion break after the fetch fan-out (scoring runs on its own workers, GPU
        # ones under an accelerator hint) is a shuffle keyed by image, so that the captions
        # of an image reach one batch and its pixels are embedded once. A hot image (a site
        # logo on a million pages) is spread over ceil(count / hot_cap) salted sub-keys, so
        # no worker holds or scores more than ~hot_cap of its records (its pixels are then
        # embedded once per sub-key), and each group is cut into batch-sized chunks.
        hot_images = (
            records
            | "Images" >> beam.Map(lambda r: (image_identity(r), None))
            | "HotImages" >> HotKeys(self.hot_cap)
        )
        outputs = (
            records
            | "ByImage" >> beam.Map(salted_by_image, hot_images=beam.pvalue.AsDict(hot_images))
            | "Spread" >> beam.GroupByKey()
            | "Chunks" >> beam.ParDo(_ChunksOfImage(size))
            | "Batch"
            >> beam.BatchElements(min_batch_size=1, max_batch_size=size, element_size_fn=len)
            | "Flat" >> beam.Map(lambda chunks: [r for chunk in chunks for r in chunk])
            | "Score" >> score.with_outputs(EMBEDDINGS_TAG, main="records")
        )
        scored = outputs.records
        if config.policy == "top_fraction":
            cuts = (
                scored
                | "Scored" >> beam.Filter(lambda r: scorable(r) and r.clip_score is not None)
                | "ByLanguage" >> beam.Map(lambda r: (r.language or "", r.clip_score))
                | "Quantiles" >> ApproximateQuantiles.PerKey(_QUANTILES)
                | "Cut" >> beam.Map(lambda kv: _cut_of(config, kv))
            )
            scored = scored | "RejectBelowCut" >> beam.ParDo(
                RejectBelowCut(), cuts=beam.pvalue.AsDict(cuts)
            )
        return scored, outputs[EMBEDDINGS_TAG]


class ClipScore(beam.PTransform):
    """Records in, records out: live downloaded pairs get `clip_score` (and the content
    heads' probabilities) and pass, or become NONNATURAL_IMAGE / UNSAFE_IMAGE /
    WATERMARKED_IMAGE / LOW_CLIP_SCORE rejects; settled and not-downloaded records pass
    unchanged."""

    def __init__(self, config: ClipConfig, hot_cap: int = DEFAULT_HOT_CAP) -> None:
        super().__init__()
        from pipeline.clip.scorer import check_content_heads  # torch: see _ScoreAll.expand

        config.require_model()  # when the graph is built, before any work
        check_content_heads(config)
        self.config = config
        self.hot_cap = hot_cap

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        scored, _ = records | "Clip" >> _ScoreAll(
            dataclasses.replace(self.config, keep_embeddings=False), self.hot_cap
        )
        return scored


class ClipScoreWithEmbeddings(beam.PTransform):
    """As `ClipScore`, and also the embeddings: returns {"records": PCollection[Record],
    "embeddings": PCollection[(key, image_embedding, text_embedding)]} (float32 arrays,
    L2-normalised, one per scored pair, whatever its decision)."""

    def __init__(self, config: ClipConfig, hot_cap: int = DEFAULT_HOT_CAP) -> None:
        super().__init__()
        from pipeline.clip.scorer import check_content_heads  # torch: see _ScoreAll.expand

        config.require_model()
        check_content_heads(config)
        self.config = config
        self.hot_cap = hot_cap

    def expand(self, records: beam.PCollection) -> dict[str, beam.PCollection]:
        config = dataclasses.replace(self.config, keep_embeddings=True)
        scored, embeddings = records | "Clip" >> _ScoreAll(config, self.hot_cap)
        return {"records": scored, "embeddings": embeddings}


def as_float32(vector: Any) -> np.ndarray:
    """An embedding as a float32 numpy vector (for writers)."""
    return np.asarray(vector, dtype=np.float32)
