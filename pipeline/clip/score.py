"""`ClipScore`: cosine similarity of each live pair's image and caption under a CLIP model.

The model loads once per worker (`setup`); images are decoded, preprocessed and embedded a
batch at a time with the captions of the same batch. Records without image bytes have not
been downloaded and pass unchanged (counted), as do settled ones.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import torch
from apache_beam.transforms.stats import ApproximateQuantiles
from PIL import Image

from lait.models.clip import encode_image_batch, load_clip, preprocess_images
from lait.record import Record, RejectReason, Status
from pipeline.clip.config import ClipConfig

NAMESPACE = "lait"
EMBEDDINGS_TAG = "embeddings"
_QUANTILES = 1001  # top-fraction cuts at 0.1 % resolution


def _scorable(record: Record) -> bool:
    return record.status is Status.CANDIDATE and record.image is not None


class ScoreWithClip(beam.DoFn):
    """Batches of records in; live ones out with `clip_score` set (and, under the threshold
    policy, rejected below their language's minimum). With `keep_embeddings`, also emits
    (key, image_embedding, text_embedding) float32 arrays to the `embeddings` output."""

    def __init__(self, config: ClipConfig) -> None:
        self.config = config

    def setup(self) -> None:
        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        model = self.config.require_model()
        self.clip = load_clip(model, self.config.pretrained, self.config.device)
        counter = beam.metrics.Metrics.counter
        self.scored = counter(NAMESPACE, "clip.scored")
        self.low = counter(NAMESPACE, f"clip.{RejectReason.LOW_CLIP_SCORE}")
        self.unscorable = counter(NAMESPACE, "clip.no_image")

    def score(self, records: Sequence[Record]) -> tuple[list[float], torch.Tensor, torch.Tensor]:
        """Rounded scores, image and text embeddings of `records` (all with images)."""
        images = []
        for record in records:
            assert record.image is not None
            with Image.open(io.BytesIO(record.image)) as image:
                images.append(image.convert("RGB"))
        image_features = encode_image_batch(self.clip, preprocess_images(self.clip, images))
        with torch.inference_mode():
            tokens = self.clip.tokenizer([r.caption for r in records]).to(self.clip.device)
            text = self.clip.model.encode_text(tokens)  # type: ignore[operator]
            text_features = torch.nn.functional.normalize(text.float(), dim=-1).cpu()
        raw = (image_features * text_features).sum(dim=-1).tolist()
        digits = self.config.score_digits
        return [round(s, digits) for s in raw], image_features, text_features

    def process(self, batch: Sequence[Record]) -> Iterator[Any]:
        live = [r for r in batch if _scorable(r)]
        scores: list[float] = []
        if live:
            scores, image_features, text_features = self.score(live)
            if self.config.keep_embeddings:
                for i, record in enumerate(live):
                    yield beam.pvalue.TaggedOutput(
                        EMBEDDINGS_TAG,
                        (record.key, image_features[i].numpy(), text_features[i].numpy()),
                    )
        by_key = dict(zip((r.key for r in live), scores, strict=True))
        threshold_policy = self.config.policy == "threshold"
        for record in batch:
            if record.status is not Status.CANDIDATE:
                yield record
                continue
            if record.image is None:
                self.unscorable.inc()
                yield record
                continue
            self.scored.inc()
            scored = dataclasses.replace(record, clip_score=by_key[record.key])
            minimum = self.config.min_score_for(record.language)
            if threshold_policy and by_key[record.key] < minimum:
                self.low.inc()
                yield scored.rejected(
                    RejectReason.LOW_CLIP_SCORE,
                    f"{by_key[record.key]:.4f} < {minimum:.4f}",
                    value=by_key[record.key],
                    limit=minimum,
                )
            else:
                yield scored


class RejectBelowCut(beam.DoFn):
    """Top-fraction policy: reject live scored records below their language's cut."""

    def setup(self) -> None:
        self.low = beam.metrics.Metrics.counter(NAMESPACE, f"clip.{RejectReason.LOW_CLIP_SCORE}")

    def process(self, record: Record, cuts: dict[str, float]) -> Iterator[Record]:
        if _scorable(record) and record.clip_score is not None:
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
    def __init__(self, config: ClipConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, records: beam.PCollection) -> Any:
        config = self.config
        outputs = (
            records
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=config.batch_size)
            | "Score"
            >> beam.ParDo(ScoreWithClip(config)).with_outputs(EMBEDDINGS_TAG, main="records")
        )
        scored = outputs.records
        if config.policy == "top_fraction":
            cuts = (
                scored
                | "Scored" >> beam.Filter(lambda r: _scorable(r) and r.clip_score is not None)
                | "ByLanguage" >> beam.Map(lambda r: (r.language or "", r.clip_score))
                | "Quantiles" >> ApproximateQuantiles.PerKey(_QUANTILES)
                | "Cut" >> beam.Map(lambda kv: _cut_of(config, kv))
            )
            scored = scored | "RejectBelowCut" >> beam.ParDo(
                RejectBelowCut(), cuts=beam.pvalue.AsDict(cuts)
            )
        return scored, outputs[EMBEDDINGS_TAG]


class ClipScore(beam.PTransform):
    """Records in, records out: live downloaded pairs get `clip_score` and pass or become
    LOW_CLIP_SCORE rejects; settled and not-downloaded records pass unchanged."""

    def __init__(self, config: ClipConfig) -> None:
        super().__init__()
        config.require_model()  # when the graph is built, before any work
        self.config = config

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        scored, _ = records | "Clip" >> _ScoreAll(
            dataclasses.replace(self.config, keep_embeddings=False)
        )
        return scored


class ClipScoreWithEmbeddings(beam.PTransform):
    """As `ClipScore`, and also the embeddings: returns {"records": PCollection[Record],
    "embeddings": PCollection[(key, image_embedding, text_embedding)]} (float32 arrays,
    L2-normalised, one per scored pair, whatever its decision)."""

    def __init__(self, config: ClipConfig) -> None:
        super().__init__()
        config.require_model()
        self.config = config

    def expand(self, records: beam.PCollection) -> dict[str, beam.PCollection]:
        config = dataclasses.replace(self.config, keep_embeddings=True)
        scored, embeddings = records | "Clip" >> _ScoreAll(config)
        return {"records": scored, "embeddings": embeddings}


def as_float32(vector: Any) -> np.ndarray:
    """An embedding as a float32 numpy vector (for writers)."""
    return np.asarray(vector, dtype=np.float32)
