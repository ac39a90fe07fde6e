"""CLIP image embeddings of records, for the semantic stage of a dedupe job of its own
(`lait dedupe --semantic`): the model loads once per worker process, images are encoded in
batches, and each live record with image bytes yields (key, unit vector).

Inside the crawl pipeline the scoring stage's embeddings feed `Deduplicate` instead, so
images are not encoded twice.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils.shared import Shared
from PIL import Image

from lait.record import NAMESPACE, Record, Status


@dataclasses.dataclass(frozen=True)
class EmbeddingModel:
    """Which CLIP encodes the images: an open_clip name or "lait-demo-clip", its pretrained
    tag or checkpoint path, and the device."""

    model: str
    pretrained: str | None = None
    device: str = "cpu"
    batch_size: int = 64


class _Loaded:
    """What `Shared` holds (by weak reference): the loaded CLIP."""

    def __init__(self, clip: Any) -> None:
        self.clip = clip


class _EmbedBatch(beam.DoFn):
    def __init__(self, spec: EmbeddingModel) -> None:
        self.spec = spec
        self._shared = Shared()
        self._loaded: _Loaded | None = None

    def setup(self) -> None:
        spec = self.spec

        def load() -> _Loaded:
            from lait.models.clip import load_clip  # torch only where embeddings are made

            return _Loaded(load_clip(spec.model, spec.pretrained, spec.device))

        self._loaded = self._shared.acquire(load, tag=f"{spec.model}:{spec.pretrained}")

    def process(self, batch: Sequence[tuple[str, bytes]]) -> Iterator[tuple[str, np.ndarray]]:
        from lait.models.clip import encode_images

        assert self._loaded is not None
        keys, images = [], []
        for key, data in batch:
            try:
                with Image.open(io.BytesIO(data)) as opened:
                    images.append(opened.convert("RGB"))
                keys.append(key)
            except (OSError, ValueError, Image.DecompressionBombError):
                Metrics.counter(NAMESPACE, "dedupe.embedding_undecodable").inc()
        vectors = encode_images(self._loaded.clip, images, batch_size=len(images) or 1).numpy()
        Metrics.counter(NAMESPACE, "dedupe.embeddings").inc(len(keys))
        for key, vector in zip(keys, vectors, strict=True):
            yield key, vector.astype(np.float32)


def _image_of(record: Record) -> Iterator[tuple[str, bytes]]:
    if record.status is Status.CANDIDATE and record.image:
        yield record.key, record.image


class ImageEmbeddings(beam.PTransform):
    """Records → (key, CLIP image embedding) for the live records that carry image bytes."""

    def __init__(self, spec: EmbeddingModel) -> None:
        super().__init__()
        self.spec = spec

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | "Images" >> beam.FlatMap(_image_of)
            | "Batches" >> beam.BatchElements(min_batch_size=1, max_batch_size=self.spec.batch_size)
            | "Encode" >> beam.ParDo(_EmbedBatch(self.spec))
        )
