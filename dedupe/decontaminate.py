"""Evaluation-set decontamination: drop training images that match an evaluation image.

Evaluation images (files, or folders searched recursively) are read and hashed inside the
pipeline; their pHash bands meet the training profiles' bands in one GroupByKey, so the
match is a shuffle like every other dedupe stage, whatever the size of either side.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import fsspec
import numpy as np

from dedupe.buckets import thumbnail_matrix
from dedupe.decisions import Decision
from dedupe.fingerprint import band_values, image_fingerprint
from dedupe.profile import Profile
from lait.dataset import storage
from lait.record import RejectReason
from pipeline.image import ImageRejected

EVAL_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


class EvalImagesError(ValueError):
    """An evaluation image path is missing or holds no readable image."""


class EvalImage(NamedTuple):
    """One evaluation image: its name (path), pHash and colour thumbnail."""

    name: str
    phash: int
    thumbnail: bytes | None = None


def eval_image_files(path: str) -> list[str]:
    """`path` itself, or every image file under the folder `path`, sorted. A path may be local or
    on an object store (gs://, s3://: read through fsspec, on the workers that hash them)."""
    if "://" in path:
        return _remote_eval_image_files(path)
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise EvalImagesError(f"evaluation images: {path} does not exist; give files or folders")
    found = []
    for root, _, names in os.walk(path):
        found += [os.path.join(root, n) for n in names if n.lower().endswith(EVAL_IMAGE_EXTENSIONS)]
    if not found:
        raise EvalImagesError(f"evaluation images: no image files under {path}")
    return sorted(found)


def _remote_eval_image_files(url: str) -> list[str]:
    fs, path = storage.filesystem(url)
    if fs.isfile(path):
        return [url]
    if not fs.isdir(path):
        raise EvalImagesError(f"evaluation images: {url} does not exist; give files or folders")
    found = [
        fs.unstrip_protocol(f) for f in fs.find(path) if f.lower().endswith(EVAL_IMAGE_EXTENSIONS)
    ]
    if not found:
        raise EvalImagesError(f"evaluation images: no image files under {url}")
    return sorted(found)


def read_eval_image(path: str) -> EvalImage:
    """Hash one evaluation image file (local or on an object store) as the pipeline hashes
    downloads."""
    with fsspec.open(path, "rb") as handle:
        data = handle.read()
    try:
        phash, thumbnail = image_fingerprint(data)
    except ImageRejected as error:
        raise EvalImagesError(
            f"evaluation image {path} cannot be used ({error.reason}: {error.detail}); "
            "remove it or fix it"
        ) from error
    return EvalImage(path, phash, thumbnail)


def load_eval_images(paths: Iterable[str]) -> list[EvalImage]:
    """Hash evaluation images in this process (for tests and small sets)."""
    return [read_eval_image(f) for path in paths for f in eval_image_files(path)]


Side = tuple[str, str, int, bytes | None]  # ("eval" | "train", name or key, phash, thumbnail)


def _train_bands(profile: Profile, bands: int) -> Iterator[tuple[tuple[int, int], Side]]:
    if profile.phash is not None:
        for band in band_values(profile.phash, bands):
            yield band, ("train", profile.key, profile.phash, profile.thumbnail)


def _eval_bands(image: EvalImage, bands: int) -> Iterator[tuple[tuple[int, int], Side]]:
    for band in band_values(image.phash, bands):
        yield band, ("eval", image.name, image.phash, image.thumbnail)


def contaminated(
    members: list[Side], threshold: int, colour_threshold: float | None
) -> Iterator[tuple[str, Decision]]:
    """(training key, decision) for each training member close to an evaluation member."""
    evals = sorted(m for m in members if m[0] == "eval")
    train = [m for m in members if m[0] == "train"]
    if not evals or not train:
        return
    eval_hashes = np.array([m[2] for m in evals], dtype=np.uint64)
    eval_thumbs = thumbnail_matrix([m[3] for m in evals])
    for _, key, phash, thumbnail in train:
        distance = np.bitwise_count(eval_hashes ^ np.uint64(phash))
        close = distance <= threshold
        if colour_threshold is not None and eval_thumbs is not None and thumbnail is not None:
            mine = np.frombuffer(thumbnail, dtype=np.uint8).astype(np.int16)
            colour = np.abs(eval_thumbs - mine).mean(axis=1)
            close &= (eval_thumbs[:, 0] < 0) | (colour <= colour_threshold)
        hits = np.nonzero(close)[0]
        if len(hits):
            first = int(hits[0])
            detail = f"matches evaluation image {evals[first][1]} (pHash {distance[first]} bits)"
            yield key, Decision(RejectReason.EVAL_CONTAMINATION, None, detail)


class EvalFingerprints(beam.PTransform):
    """Paths (files or folders) → EvalImage, read and hashed on the workers."""

    def __init__(self, paths: Iterable[str]) -> None:
        super().__init__()
        self.paths = sorted(paths)

    def expand(self, pipeline: Any) -> beam.PCollection:
        return (
            pipeline
            | "Paths" >> beam.Create(self.paths)
            | "Files" >> beam.FlatMap(eval_image_files)
            | "Spread" >> beam.Reshuffle()
            | "Hash" >> beam.Map(read_eval_image)
        )


class ContaminationDecisions(beam.PTransform):
    """Profiles + evaluation images → (key, Decision) for contaminated training records."""

    def __init__(
        self, eval_images: beam.PCollection, threshold: int, bands: int, colour: float | None
    ) -> None:
        super().__init__()
        self.eval_images = eval_images
        self.threshold = threshold
        self.bands = bands
        self.colour = colour

    def expand(self, profiles: beam.PCollection) -> beam.PCollection:
        threshold, colour = self.threshold, self.colour

        def decide(element: tuple[Any, Iterable[Side]]) -> Iterator[tuple[str, Decision]]:
            return contaminated(list(element[1]), threshold, colour)

        train = profiles | "TrainBands" >> beam.FlatMap(_train_bands, self.bands)
        evals = self.eval_images | "EvalBands" >> beam.FlatMap(_eval_bands, self.bands)
        return (
            (train, evals)
            | "AllBands" >> beam.Flatten()
            | "Buckets" >> beam.GroupByKey()
            | "Match" >> beam.FlatMap(decide)
            # a record may match in several buckets: keep one decision per key
            | "OnePerKey" >> beam.CombinePerKey(min)
        )
