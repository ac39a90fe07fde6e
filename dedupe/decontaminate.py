"""Evaluation-set decontamination: drop training records that match an evaluation set.

An evaluation set is a folder or file of images, or a Karpathy split file (Flickr30k / COCO:
`{"images": [{"filename", "filepath"?, "split", "sentences": [{"raw"}], ...}]}`, its images
looked up beside it). Every path may be local, gs:// or s3://: files are listed, read and
hashed on the workers through fsspec, like every other input.

Evaluation sets are small (thousands), so their fingerprints reach every worker as one side
input each, and every training record is compared with every one of them:

- images: the pHash within `eval_phash_threshold` bits of any evaluation image's (and the
  colour thumbnail check), all of them compared in numpy, so no banding can miss a match;
- captions: the same normalised caption as an evaluation caption (exact), or a word-shingle
  Jaccard >= `eval_caption_threshold` with one (near: MinHash LSH finds the candidates, the
  exact Jaccard decides);
- URLs: the record's image URL is, in canonical form, one that the evaluation set names
  (a Karpathy entry's `url`, `flickr_url` or `coco_url`).

Each drop is EVAL_CONTAMINATION, its detail naming the evaluation item and the measure; the
Hamming bits or the Jaccard go to the ledger's reject_value, the threshold to reject_limit.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import fsspec
import numpy as np
from apache_beam.metrics import Metrics
from datasketch import MinHash

from dedupe.buckets import thumbnail_matrix
from dedupe.caption import MINHASH_SEED, caption_words, jaccard, shingles
from dedupe.decisions import Decision
from dedupe.fingerprint import image_fingerprint, thumbnail_distances
from dedupe.profile import Profile
from lait.dataset import storage
from lait.image_decode import ImageRejected
from lait.record import NAMESPACE, RejectReason
from lait.urls import InvalidUrlError, canonical_url

EVAL_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
KARPATHY_URL_FIELDS = ("url", "flickr_url", "coco_url")
_NUM_PERM = 64
_BANDS = 16


class EvalImagesError(ValueError):
    """An evaluation set path is missing, holds no readable image, or is not a Karpathy file."""


class EvalImage(NamedTuple):
    """One evaluation image: its name (path), pHash and colour thumbnail."""

    name: str
    phash: int
    thumbnail: bytes | None = None


class EvalText(NamedTuple):
    """One evaluation caption or image URL, and the evaluation image it belongs to."""

    name: str
    caption: str | None = None
    url: str | None = None


class EvalImageFile(NamedTuple):
    """An evaluation image to read: its name and the paths it may be at (first found wins)."""

    name: str
    paths: tuple[str, ...]


def _is_karpathy(path: str) -> bool:
    return path.lower().endswith(".json")


def _is_image(path: str) -> bool:
    return path.lower().endswith(EVAL_IMAGE_EXTENSIONS)


def eval_image_files(path: str) -> list[str]:
    """`path` itself, or every image file under the folder `path`, sorted. A path may be local or
    on an object store (gs://, s3://: read through fsspec, on the workers that hash them)."""
    fs, root = storage.filesystem(path)
    if fs.isfile(root):
        return [path]
    if not fs.isdir(root):
        raise EvalImagesError(f"evaluation images: {path} does not exist; give files or folders")
    remote = "://" in str(path)
    found = [fs.unstrip_protocol(f) if remote else f for f in fs.find(root) if _is_image(f)]
    if not found:
        raise EvalImagesError(f"evaluation images: no image files under {path}")
    return sorted(found)


def karpathy_entries(path: str) -> Iterator[EvalImageFile | EvalText]:
    """The images (to read), captions and URLs of a Karpathy split file, every split.

    An image is looked for at `filepath/filename` beside the file, then `filename`, then
    `images/filename`; one found nowhere is counted (`dedupe.eval_images_missing`) and its
    captions and URLs still count.
    """
    fs, root = storage.filesystem(path)
    try:
        with fs.open(root, "rb") as handle:
            entries = json.loads(handle.read().decode("utf-8"))["images"]
    except FileNotFoundError as error:
        raise EvalImagesError(f"evaluation set: no Karpathy split file {path}") from error
    except (ValueError, KeyError, TypeError) as error:
        raise EvalImagesError(
            f"evaluation set: {path} is not a Karpathy split file ({error!r}); it needs "
            '{"images": [{"filename": ..., "sentences": [{"raw": ...}]}]}'
        ) from error
    base = posixpath.dirname(str(path))
    label = posixpath.basename(str(path))
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or "filename" not in entry:
            raise EvalImagesError(f"evaluation set: entry {number} of {path} has no filename")
        filename = str(entry["filename"])
        folder = str(entry.get("filepath") or "")
        name = f"{label}:{posixpath.join(folder, filename)}"
        candidates = [
            posixpath.join(base, folder, filename),
            posixpath.join(base, filename),
            posixpath.join(base, "images", filename),
        ]
        yield EvalImageFile(name, tuple(dict.fromkeys(candidates)))
        for sentence in entry.get("sentences", []):
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            if raw and str(raw).strip():
                yield EvalText(name, caption=str(raw).strip())
        for field in KARPATHY_URL_FIELDS:
            if entry.get(field):
                yield EvalText(name, url=str(entry[field]))


def eval_set_items(path: str) -> Iterator[EvalImageFile | EvalText]:
    """What one evaluation-set path holds: image files to read, and captions and URLs."""
    if _is_karpathy(path):
        yield from karpathy_entries(path)
        return
    for file in eval_image_files(path):
        yield EvalImageFile(file, (file,))


def read_eval_image(path: str) -> EvalImage:
    """Hash one evaluation image file (local or on an object store) as the pipeline hashes
    downloads."""
    with fsspec.open(path, "rb") as handle:
        data = handle.read()
    return _fingerprint(path, path, data)


def _fingerprint(name: str, path: str, data: bytes) -> EvalImage:
    try:
        phash, thumbnail = image_fingerprint(data)
    except ImageRejected as error:
        raise EvalImagesError(
            f"evaluation image {path} cannot be used ({error.reason}: {error.detail}); "
            "remove it or fix it"
        ) from error
    return EvalImage(name, phash, thumbnail)


def read_eval_image_file(image: EvalImageFile) -> Iterator[EvalImage]:
    """The first of the image's paths that exists, hashed; none (counted) if none does."""
    for path in image.paths:
        try:
            with fsspec.open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            continue
        yield _fingerprint(image.name, path, data)
        return
    if len(image.paths) == 1:  # a file that was listed and is gone
        raise EvalImagesError(f"evaluation image {image.paths[0]} disappeared while reading")
    Metrics.counter(NAMESPACE, "dedupe.eval_images_missing").inc()


def load_eval_images(paths: Iterable[str]) -> list[EvalImage]:
    """Hash evaluation images in this process (for tests and small sets)."""
    return [
        image
        for path in paths
        for item in eval_set_items(path)
        if isinstance(item, EvalImageFile)
        for image in read_eval_image_file(item)
    ]


def caption_key(caption: str) -> str:
    """A caption as exact decontamination compares it: lower case, words only, digits as 0."""
    return " ".join(caption_words(caption))


def url_key(url: str) -> str:
    """An image URL as decontamination compares it: canonical, scheme-less."""
    try:
        canonical = canonical_url(url)
    except (InvalidUrlError, ValueError):
        canonical = url.strip()
    return canonical.split("://", 1)[-1]


class ImageIndex:
    """Every evaluation image's pHash and thumbnail as arrays, compared all at once."""

    def __init__(self, images: Sequence[EvalImage]) -> None:
        ordered = sorted(images)
        self.names = [image.name for image in ordered]
        self.hashes = np.array([image.phash for image in ordered], dtype=np.uint64)
        self.thumbnails = thumbnail_matrix([image.thumbnail for image in ordered])

    def match(
        self, phash: int, thumbnail: bytes | None, threshold: int, colour: float | None
    ) -> tuple[str, int] | None:
        """(name, bits) of the closest evaluation image within the threshold, if any."""
        if not len(self.hashes):
            return None
        distance = np.bitwise_count(self.hashes ^ np.uint64(phash)).astype(np.int16)
        close = distance <= threshold
        if colour is not None and self.thumbnails is not None and thumbnail is not None:
            mine = np.frombuffer(thumbnail, dtype=np.uint8).astype(np.int16).reshape(1, -1)
            others = self.thumbnails
            differs = thumbnail_distances(others, np.repeat(mine, len(others), axis=0)) > colour
            close &= (self.thumbnails[:, 0] < 0) | ~differs
        if not close.any():
            return None
        best = int(np.argmin(np.where(close, distance, 99)))
        return self.names[best], int(distance[best])


class TextIndex:
    """Evaluation captions (exact keys, MinHash LSH buckets of shingle sets) and URLs."""

    def __init__(self, texts: Sequence[EvalText], shingle_words: int, min_words: int) -> None:
        self.shingle_words = shingle_words
        self.min_words = min_words
        self.exact: dict[str, str] = {}
        self.urls: dict[str, str] = {}
        self.sets: list[tuple[str, set[str]]] = []
        self.buckets: dict[tuple[int, bytes], list[int]] = {}
        for text in sorted(texts, key=lambda t: (t.name, t.caption or "", t.url or "")):
            if text.url:
                self.urls.setdefault(url_key(text.url), text.name)
            if text.caption and len(caption_words(text.caption)) >= min_words:
                self.exact.setdefault(caption_key(text.caption), text.name)
                index = len(self.sets)
                words = shingles(text.caption, shingle_words)
                self.sets.append((text.name, words))
                for band in _bands(words):
                    self.buckets.setdefault(band, []).append(index)

    def caption_match(self, caption: str, threshold: float) -> tuple[str, float] | None:
        """(name, Jaccard) of an evaluation caption equal or near to `caption`, if any."""
        if len(caption_words(caption)) < self.min_words:
            return None
        exact = self.exact.get(caption_key(caption))
        if exact is not None:
            return exact, 1.0
        words = shingles(caption, self.shingle_words)
        candidates = sorted({i for band in _bands(words) for i in self.buckets.get(band, [])})
        best: tuple[str, float] | None = None
        for index in candidates:
            name, other = self.sets[index]
            similarity = jaccard(words, other)
            if similarity >= threshold and (best is None or similarity > best[1]):
                best = (name, similarity)
        return best


def _bands(words: set[str]) -> list[tuple[int, bytes]]:
    signature = MinHash(num_perm=_NUM_PERM, seed=MINHASH_SEED)
    for shingle in sorted(words):
        signature.update(shingle.encode("utf-8"))
    rows = _NUM_PERM // _BANDS
    values = signature.hashvalues
    return [(b, values[b * rows : (b + 1) * rows].tobytes()) for b in range(_BANDS)]


class _ImageOrText(beam.PartitionFn):
    def partition_for(self, element: Any, num_partitions: int, *args: Any, **kwargs: Any) -> int:
        return 0 if isinstance(element, EvalImageFile) else 1


class EvalSets(beam.PTransform):
    """Paths (folders or files of images, Karpathy split files) → (EvalImage, EvalText)
    PCollections, listed, read and hashed on the workers."""

    def __init__(self, paths: Iterable[str]) -> None:
        super().__init__()
        self.paths = sorted(paths)

    def expand(self, pipeline: Any) -> tuple[beam.PCollection, beam.PCollection]:
        items = (
            pipeline | "Paths" >> beam.Create(self.paths) | "Items" >> beam.FlatMap(eval_set_items)
        )
        split = items | "ImageOrText" >> beam.Partition(_ImageOrText(), 2)
        images = (
            split[0] | "Spread" >> beam.Reshuffle() | "Hash" >> beam.FlatMap(read_eval_image_file)
        )
        return images, split[1]


class EvalFingerprints(beam.PTransform):
    """Paths (files or folders) → EvalImage, read and hashed on the workers."""

    def __init__(self, paths: Iterable[str]) -> None:
        super().__init__()
        self.paths = sorted(paths)

    def expand(self, pipeline: Any) -> beam.PCollection:
        images, _ = pipeline | "EvalSets" >> EvalSets(self.paths)
        return images


class _Contaminated(beam.DoFn):
    def __init__(
        self,
        threshold: int,
        colour: float | None,
        caption_threshold: float,
    ) -> None:
        self.threshold = threshold
        self.colour = colour
        self.caption_threshold = caption_threshold

    def process(
        self, profile: Profile, images: ImageIndex, texts: TextIndex
    ) -> Iterator[tuple[str, Decision]]:
        reason = RejectReason.EVAL_CONTAMINATION
        if profile.phash is not None:
            hit = images.match(profile.phash, profile.thumbnail, self.threshold, self.colour)
            if hit is not None:
                name, bits = hit
                detail = f"matches evaluation image {name} (pHash {bits} bits)"
                Metrics.counter(NAMESPACE, "dedupe.eval_image_matches").inc()
                yield profile.key, Decision(reason, None, detail, bits, self.threshold)
                return
        if profile.url and texts.urls:
            name_of_url = texts.urls.get(url_key(profile.url))
            if name_of_url is not None:
                Metrics.counter(NAMESPACE, "dedupe.eval_url_matches").inc()
                detail = f"image url is evaluation image {name_of_url}'s"
                yield profile.key, Decision(reason, None, detail)
                return
        if profile.caption and texts.sets:
            found = texts.caption_match(profile.caption, self.caption_threshold)
            if found is not None:
                name, similarity = found
                how = "is" if similarity == 1.0 else f"is near (Jaccard {similarity:.2f})"
                Metrics.counter(NAMESPACE, "dedupe.eval_caption_matches").inc()
                detail = f"caption {how} an evaluation caption of {name}"
                yield (
                    profile.key,
                    Decision(reason, None, detail, round(similarity, 4), self.caption_threshold),
                )


class ContaminationDecisions(beam.PTransform):
    """Profiles + evaluation images and texts → (key, Decision) for contaminated records.

    The evaluation side becomes two indexes (one combine each) that every worker holds as
    side inputs; the profiles are not shuffled at all.
    """

    def __init__(
        self,
        eval_images: beam.PCollection,
        eval_texts: beam.PCollection | None,
        threshold: int,
        colour: float | None,
        *,
        caption_threshold: float = 0.8,
        caption_shingle_words: int = 1,
        caption_min_words: int = 6,
    ) -> None:
        super().__init__()
        self.eval_images = eval_images
        self.eval_texts = eval_texts
        self.threshold = threshold
        self.colour = colour
        self.caption_threshold = caption_threshold
        self.caption_shingle_words = caption_shingle_words
        self.caption_min_words = caption_min_words

    def expand(self, profiles: beam.PCollection) -> beam.PCollection:
        shingle_words, min_words = self.caption_shingle_words, self.caption_min_words
        images = (
            self.eval_images
            | "AllEvalImages" >> beam.combiners.ToList()
            | "ImageIndex" >> beam.Map(ImageIndex)
        )
        texts_in = (
            self.eval_texts
            if self.eval_texts is not None
            else profiles.pipeline | "NoEvalTexts" >> beam.Create([])
        )
        texts = (
            texts_in
            | "AllEvalTexts" >> beam.combiners.ToList()
            | "TextIndex" >> beam.Map(lambda t: TextIndex(t, shingle_words, min_words))
        )
        return profiles | "Match" >> beam.ParDo(
            _Contaminated(self.threshold, self.colour, self.caption_threshold),
            beam.pvalue.AsSingleton(images),
            beam.pvalue.AsSingleton(texts),
        )
