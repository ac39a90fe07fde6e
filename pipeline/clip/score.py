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
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import torch
from apache_beam.transforms.stats import ApproximateQuantiles
from apache_beam.utils.shared import Shared
from PIL import Image

from dedupe.keep_best import DEFAULT_HOT_CAP, GROUP_SIZE_METRIC, HotKeys, salt_of
from lait.models.clip import LoadedClip, encode_image_batch, load_clip, preprocess_images
from lait.models.content import ContentHead, load_content_head, read_head_metadata
from lait.record import NAMESPACE, Record, RejectReason, Status
from pipeline.clip.config import ClipConfig

EMBEDDINGS_TAG = "embeddings"
_QUANTILES = 1001  # top-fraction cuts at 0.1 % resolution

# Per signal: the record field its probability goes to and the reason it rejects with.
CONTENT_FIELDS: dict[str, str] = {
    "nonnatural": "p_nonnatural",
    "unsafe": "p_unsafe",
    "watermark": "p_watermark",
}
CONTENT_REASONS: dict[str, RejectReason] = {
    "nonnatural": RejectReason.NONNATURAL_IMAGE,
    "unsafe": RejectReason.UNSAFE_IMAGE,
    "watermark": RejectReason.WATERMARKED_IMAGE,
}


def _has_pixels(record: Record) -> bool:
    return record.image is not None or record.image_ref is not None


def _scorable(record: Record) -> bool:
    return record.status is Status.CANDIDATE and _has_pixels(record)


def image_identity(record: Record) -> str:
    """What makes two records "the same image" within a batch: the staged reference, else
    the bytes' hash, else (not yet hashed) the record itself."""
    return record.image_ref or record.sha256 or record.key


def image_bytes(record: Record) -> bytes:
    """The record's image bytes: carried, or read back from where the download staged them."""
    if record.image is not None:
        return record.image
    if record.image_ref is None:
        raise ValueError(f"record {record.key} has no image bytes and no image_ref")
    # Imported here: staging is the download stage's module, and records that carry their
    # bytes never need it.
    from pipeline.staging import read_staged

    return read_staged(record.image_ref)


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


@dataclasses.dataclass
class ScoringModel:
    """What one worker process shares: the CLIP model and the content heads on its
    embedding (a plain class, so `Shared` can hold it by weak reference)."""

    clip: LoadedClip
    heads: dict[str, ContentHead]


def check_content_heads(config: ClipConfig) -> None:
    """Fail at graph construction when a content head is missing or belongs to another
    CLIP model (reads only the heads' metadata)."""
    for signal, head_config in config.content_heads().items():
        assert head_config.head is not None
        metadata = read_head_metadata(head_config.head)
        if metadata["signal"] != signal:
            raise ValueError(
                f"clip.{signal}.head {head_config.head!r} is a {metadata['signal']!r} head; "
                f"give a {signal} head there"
            )
        load_content_head(head_config.head).check_model(config.model or "")


def _model_loader(config: ClipConfig) -> Callable[[], ScoringModel]:
    def load() -> ScoringModel:
        if config.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(
                f"clip.device={config.device} but torch sees no GPU on this worker: run on "
                "GPU workers (clip.accelerator, a CUDA torch in the worker image) or set "
                "clip.device=cpu"
            )
        model = config.require_model()
        clip = load_clip(model, config.pretrained, config.device)
        heads = {}
        for signal, head_config in config.content_heads().items():
            assert head_config.head is not None
            head = load_content_head(head_config.head)
            head.check_model(model)
            heads[signal] = head
        return ScoringModel(clip, heads)

    return load


class ScoreWithClip(beam.DoFn):
    """Batches of records in; live ones out with `clip_score` set, the content heads'
    probabilities set, and (a head's probability above its threshold, then under the
    threshold policy a score below its language's minimum) rejected. With
    `keep_embeddings`, also emits (key, image_embedding, text_embedding) float32 arrays to
    the `embeddings` output."""

    def __init__(self, config: ClipConfig) -> None:
        self.config = config
        self._shared = Shared()  # one model per worker process, whatever the instances

    def setup(self) -> None:
        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        config = self.config
        tag = (config.model, config.pretrained, config.device, tuple(config.content_heads()))
        self.model: ScoringModel = self._shared.acquire(_model_loader(config), tag=repr(tag))
        self.clip = self.model.clip
        counter = beam.metrics.Metrics.counter
        self.scored = counter(NAMESPACE, "clip.scored")
        self.images = counter(NAMESPACE, "clip.images_embedded")
        self.low = counter(NAMESPACE, f"clip.{RejectReason.LOW_CLIP_SCORE}")
        self.unscorable = counter(NAMESPACE, "clip.no_image")
        self.content_rejects = {
            signal: counter(NAMESPACE, f"clip.{CONTENT_REASONS[signal]}")
            for signal in self.model.heads
        }

    def embed_images(self, records: Sequence[Record]) -> tuple[torch.Tensor, list[int]]:
        """Embeddings of the distinct images of `records` (each decoded and embedded once),
        and for each record the row of its image."""
        rows: dict[str, int] = {}
        images: list[Image.Image] = []
        index: list[int] = []
        for record in records:
            identity = image_identity(record)
            if identity not in rows:
                rows[identity] = len(images)
                with Image.open(io.BytesIO(image_bytes(record))) as image:
                    images.append(image.convert("RGB"))
            index.append(rows[identity])
        self.images.inc(len(images))
        return encode_image_batch(self.clip, preprocess_images(self.clip, images)), index

    def score(self, records: Sequence[Record]) -> tuple[list[float], torch.Tensor, torch.Tensor]:
        """Rounded scores, image and text embeddings (one row per record) of `records`."""
        distinct, index = self.embed_images(records)
        image_features = distinct[index]
        with torch.inference_mode():
            tokens = self.clip.tokenizer([r.caption for r in records]).to(self.clip.device)
            text = self.clip.model.encode_text(tokens)
            text_features = torch.nn.functional.normalize(text.float(), dim=-1).cpu()
        raw = (image_features * text_features).sum(dim=-1).tolist()
        digits = self.config.score_digits
        return [round(s, digits) for s in raw], image_features, text_features

    def content_probabilities(self, image_features: torch.Tensor) -> dict[str, list[float]]:
        """Per head that runs, the rounded probability of each row of `image_features`."""
        digits = self.config.score_digits
        return {
            signal: [round(float(p), digits) for p in head.probabilities(image_features)]
            for signal, head in self.model.heads.items()
        }

    def decide(self, record: Record, score: float, probabilities: dict[str, float]) -> Record:
        """`record` scored, then rejected by the first head over its threshold, or by the
        CLIP threshold, or passed."""
        fields: dict[str, Any] = {CONTENT_FIELDS[s]: p for s, p in probabilities.items()}
        scored = dataclasses.replace(record, clip_score=score, **fields)
        heads = self.config.content_heads()
        for signal, p in probabilities.items():
            head = heads[signal]
            if head.reject and p > head.threshold:
                self.content_rejects[signal].inc()
                return scored.rejected(
                    CONTENT_REASONS[signal],
                    f"p_{signal} {p:.4f} > {head.threshold:.4f} ({head.head})",
                    value=p,
                    limit=head.threshold,
                )
        minimum = self.config.min_score_for(record.language)
        if self.config.policy == "threshold" and score < minimum:
            self.low.inc()
            return scored.rejected(
                RejectReason.LOW_CLIP_SCORE,
                f"{score:.4f} < {minimum:.4f}",
                value=score,
                limit=minimum,
            )
        return scored

    def process(self, batch: Sequence[Record]) -> Iterator[Any]:
        live = [r for r in batch if _scorable(r)]
        decided: dict[int, Record] = {}
        if live:
            scores, image_features, text_features = self.score(live)
            probabilities = self.content_probabilities(image_features)
            for i, record in enumerate(live):
                self.scored.inc()
                mine = {signal: values[i] for signal, values in probabilities.items()}
                decided[id(record)] = self.decide(record, scores[i], mine)
                if self.config.keep_embeddings:
                    yield beam.pvalue.TaggedOutput(
                        EMBEDDINGS_TAG,
                        (record.key, image_features[i].numpy(), text_features[i].numpy()),
                    )
        for record in batch:
            if id(record) in decided:
                yield decided[id(record)]
                continue
            if record.status is Status.CANDIDATE:
                self.unscorable.inc()
            yield record


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
    def __init__(self, config: ClipConfig, hot_cap: int = DEFAULT_HOT_CAP) -> None:
        super().__init__()
        self.config = config
        self.hot_cap = hot_cap

    def expand(self, records: beam.PCollection) -> Any:
        config = self.config
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
    """Records in, records out: live downloaded pairs get `clip_score` (and the content
    heads' probabilities) and pass, or become NONNATURAL_IMAGE / UNSAFE_IMAGE /
    WATERMARKED_IMAGE / LOW_CLIP_SCORE rejects; settled and not-downloaded records pass
    unchanged."""

    def __init__(self, config: ClipConfig, hot_cap: int = DEFAULT_HOT_CAP) -> None:
        super().__init__()
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
