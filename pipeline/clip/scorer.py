"""`ScoreWithClip`, the CLIP stage's model step: batches of records in, each live pair scored
(cosine of its image and caption embeddings) and run through the content heads.

The model loads once per worker process (`apache_beam.utils.shared.Shared`: every DoFn
instance and thread of the process uses one copy). This is the only module of the stage that
imports torch and open_clip; `pipeline.clip.score` builds the graph around it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import apache_beam as beam
import torch
from apache_beam.utils.shared import Shared

from lait.models.clip import LoadedClip, encode_image_batch, load_clip, preprocess_encoded
from lait.models.content import ContentHead, load_content_head, read_head_metadata
from lait.record import NAMESPACE, Record, RejectReason, Status
from pipeline.clip.config import ClipConfig
from pipeline.clip.records import (
    CONTENT_FIELDS,
    CONTENT_REASONS,
    EMBEDDINGS_TAG,
    image_bytes,
    image_identity,
    scorable,
)


@dataclasses.dataclass
class ScoringModel:
    """What one worker process shares: the CLIP model, the content heads on its embedding,
    and the threads that decode and preprocess images for it (as many as torch uses; Pillow
    releases the interpreter lock there, so the process's cores share that work). A plain
    class, so `Shared` can hold it by weak reference."""

    clip: LoadedClip
    heads: dict[str, ContentHead]
    pool: ThreadPoolExecutor


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
        pool = ThreadPoolExecutor(torch.get_num_threads(), thread_name_prefix="clip-preprocess")
        return ScoringModel(clip, heads, pool)

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
        distinct: list[Record] = []
        index: list[int] = []
        for record in records:
            identity = image_identity(record)
            if identity not in rows:
                rows[identity] = len(distinct)
                distinct.append(record)
            index.append(rows[identity])
        self.images.inc(len(distinct))
        pool = self.model.pool
        # Staged bytes are read in the pool too: on an object store each read is a request.
        images = list(pool.map(image_bytes, distinct))
        pixels = preprocess_encoded(self.clip, images, pool)
        return encode_image_batch(self.clip, pixels), index

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
        live = [r for r in batch if scorable(r)]
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
