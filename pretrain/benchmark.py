"""Standard retrieval benchmarks from local files: Flickr30k and COCO in Karpathy's JSON.

Karpathy's split files (`dataset_flickr30k.json`, `dataset_coco.json`) list every image as
`{"filename", "filepath"?, "split", "sentences": [{"raw", "tokens", ...}], "imgid"/"cocoid"}`.
Flickr30k's images lie directly in the images folder; COCO's under `filepath/filename`
(`val2014/COCO_val2014_...jpg`). The protocols, as UNITER and ALBEF report them:

- Flickr30k 1K test: the 1,000 `test` images, 5 captions each;
- COCO 5K test: the 5,000 `test` images, 5 captions each;
- COCO 1K test: the same 5,000 in 5 folds of 1,000 (in file order), figures averaged.

Any other Karpathy-format file (the demo web's miniature benchmark) is evaluated on all images
of the split. Images are read with PIL from the local folder and go through the checkpoint's
region source; a `.npz` beside an image (same stem) feeds a `precomputed` source.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from pretrain.evaluate import RECALL_KS, LoadedCheckpoint, RetrievalSet, evaluate_set
from pretrain.shards import RawSample

BENCHMARKS = ("flickr30k", "coco", "custom")
CAPTIONS_PER_IMAGE = 5  # the protocols use the first five captions of an image
COCO_FOLD = 1000

#: Published zero-shot figures (percent), only those this project is sure of.
PUBLISHED_ZERO_SHOT: dict[str, dict[str, dict[str, tuple[float, float, float]]]] = {
    "flickr30k": {
        "ImageBERT (paper)": {"tr": (70.7, 90.2, 94.0), "ir": (54.3, 79.6, 87.5)},
    },
}


class BenchmarkError(ValueError):
    """A benchmark file, split or image is missing or unreadable; the message says which."""


@dataclass(frozen=True)
class KarpathyImage:
    """One image of a Karpathy split file: where it is, its split and its captions."""

    image_id: str
    path: Path
    split: str
    captions: tuple[str, ...]


def read_karpathy(
    karpathy_json: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    splits: Sequence[str] = ("test",),
    *,
    captions_per_image: int | None = CAPTIONS_PER_IMAGE,
) -> list[KarpathyImage]:
    """The images of `splits` in a Karpathy JSON file, in file order, with their first
    `captions_per_image` captions (None: all). Raises BenchmarkError naming what is missing."""
    path = Path(karpathy_json)
    if not path.is_file():
        raise BenchmarkError(
            f"no Karpathy split file {path}; download dataset_flickr30k.json / dataset_coco.json "
            "(Karpathy's splits) or write the demo's with `lait demo`"
        )
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["images"]
    except (ValueError, KeyError, TypeError) as error:
        raise BenchmarkError(f"{path} is not a Karpathy split file ({error})") from error
    root = Path(images_dir)
    if not root.is_dir():
        raise BenchmarkError(f"no images folder {root}; pass --images the folder of the images")
    images = []
    for number, entry in enumerate(entries):
        if entry.get("split") not in splits:
            continue
        captions = tuple(s["raw"].strip() for s in entry.get("sentences", []))[:captions_per_image]
        if not captions:
            continue
        image_id = str(entry.get("cocoid", entry.get("imgid", number)))
        images.append(KarpathyImage(image_id, _image_path(root, entry), entry["split"], captions))
    if not images:
        present = sorted({str(e.get("split")) for e in entries})
        raise BenchmarkError(
            f"split {'+'.join(splits)} of {path} has no images with captions; its splits are "
            f"{present}"
        )
    missing = [str(image.path) for image in images if not image.path.is_file()]
    if missing:
        raise BenchmarkError(
            f"{len(missing)} of {len(images)} {'+'.join(splits)} images are not in {root} (first: "
            f"{missing[0]}); point --images at the folder holding them (COCO: the one with "
            "val2014/ and train2014/)"
        )
    return images


def _image_path(root: Path, entry: dict[str, Any]) -> Path:
    nested = root / entry.get("filepath", "") / entry["filename"]
    return nested if nested.is_file() else root / entry["filename"]


class ImageFiles(Sequence[RawSample]):
    """Benchmark images as `RawSample`s, read from disk when indexed (so a 5K split is never
    all in memory), with a same-stem `.npz` beside an image as its `npz` member."""

    def __init__(self, images: Sequence[KarpathyImage]) -> None:
        self.images = list(images)

    def __len__(self) -> int:
        return len(self.images)

    @overload
    def __getitem__(self, index: int) -> RawSample: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[RawSample]: ...
    def __getitem__(self, index: int | slice) -> RawSample | Sequence[RawSample]:
        if isinstance(index, slice):
            return ImageFiles(self.images[index])
        image = self.images[index]
        files = {"jpg": image.path.read_bytes()}
        regions = image.path.with_suffix(".npz")
        if regions.is_file():
            files["npz"] = regions.read_bytes()
        return RawSample(image.image_id, files, source="karpathy", shard=str(image.path))

    def __iter__(self) -> Iterator[RawSample]:
        return (self[i] for i in range(len(self)))


def retrieval_set(images: Sequence[KarpathyImage]) -> RetrievalSet:
    """The images and their captions as the evaluator's captions-grouped-by-image set."""
    captions = [c for image in images for c in image.captions]
    image_of = [row for row, image in enumerate(images) for _ in image.captions]
    return RetrievalSet(captions, image_of, ImageFiles(images), 0, [i.image_id for i in images])


def protocols(benchmark: str, images: list[KarpathyImage]) -> dict[str, list[list[KarpathyImage]]]:
    """The benchmark's protocols, each a list of folds whose figures are averaged."""
    if benchmark == "flickr30k":
        return {"1k": [images]}
    if benchmark == "coco":
        folds = [images[i : i + COCO_FOLD] for i in range(0, len(images), COCO_FOLD)]
        out = {"5k": [images]}
        if len(images) >= COCO_FOLD:
            out["1k"] = [f for f in folds if len(f) == COCO_FOLD]
        return out
    return {"all": [images]}


def _average(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-fold figures averaged (recalls and chance); the folds kept under `folds`."""

    def mean_of(*path: str) -> dict[str, float]:
        tables = [f[path[0]] if len(path) == 1 else f[path[0]][path[1]] for f in folds]
        return {f"r{k}": sum(t[f"r{k}"] for t in tables) / len(folds) for k in RECALL_KS}

    mean = {**folds[0], "folds": folds}
    for direction in ("i2t", "t2i"):
        mean[direction] = mean_of(direction)
    mean["first_pass"] = {d: mean_of("first_pass", d) for d in ("i2t", "t2i")}
    mean["chance"] = {d: mean_of("chance", d) for d in ("i2t", "t2i")}
    for name in ("chance_r1", "r1_mean", "r1_over_chance"):
        mean[name] = sum(f[name] for f in folds) / len(folds)
    return mean


def benchmark_name(karpathy_json: str | os.PathLike[str], benchmark: str | None) -> str:
    """`benchmark` if given, else the file's `dataset` field when it names a known one."""
    if benchmark is not None:
        if benchmark not in BENCHMARKS:
            raise BenchmarkError(f"benchmark is one of {', '.join(BENCHMARKS)}, not {benchmark!r}")
        return benchmark
    try:
        named = json.loads(Path(karpathy_json).read_text(encoding="utf-8")).get("dataset")
    except (OSError, ValueError):
        named = None
    return named if named in ("flickr30k", "coco") else "custom"


def evaluate_benchmark(
    loaded: LoadedCheckpoint,
    karpathy_json: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    *,
    benchmark: str | None = None,
    split: str = "test",
    top_k: int = 16,
    batch_size: int = 64,
    device: str = "cpu",
) -> dict[str, Any]:
    """Zero-shot (or fine-tuned) retrieval of a loaded checkpoint on a benchmark's split.

    Returns `{"benchmark", "split", "protocols": {name: figures}, "published": {...}}`, each
    protocol's figures as `pretrain.evaluate.evaluate_set` gives them (averaged over folds,
    with `folds`, for COCO 1K).
    """
    name = benchmark_name(karpathy_json, benchmark)
    images = read_karpathy(karpathy_json, images_dir, (split,))
    results = {}
    for protocol, folds in protocols(name, images).items():
        figures = [
            evaluate_set(
                loaded,
                retrieval_set(fold),
                top_k=top_k,
                batch_size=batch_size,
                device=device,
                accuracy=False,
            )
            for fold in folds
        ]
        results[protocol] = figures[0] if len(figures) == 1 else _average(figures)
    return {
        "benchmark": name,
        "split": split,
        "karpathy_json": str(karpathy_json),
        "protocols": results,
        "published": PUBLISHED_ZERO_SHOT.get(name, {}),
    }


def _row(label: str, tr: Sequence[float], ir: Sequence[float]) -> str:
    def cells(values: Sequence[float]) -> str:
        return " ".join(f"{v:5.1f}" for v in values)

    return f"{label:<22} {cells(tr)} | {cells(ir)}"


def format_table(results: dict[str, Any], columns: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """The paper's table layout (TR R@1 R@5 R@10 | IR R@1 R@5 R@10, in percent) for each
    protocol: one row per `columns` entry (label, evaluate_benchmark result), then chance and
    the published figures (or "not published here")."""
    lines = []
    for protocol, first in results["protocols"].items():
        lines.append(
            f"{results['benchmark']} {protocol} ({results['split']}: {first['images']} images, "
            f"{first['samples']} captions)"
        )
        lines.append(f"{'':<22} {'TR R@1   R@5  R@10':>17} | {'IR R@1   R@5  R@10':>17}")
        for label, figures in columns:
            at = figures["protocols"][protocol]
            lines.append(
                _row(
                    label,
                    [100 * at["i2t"][f"r{k}"] for k in RECALL_KS],
                    [100 * at["t2i"][f"r{k}"] for k in RECALL_KS],
                )
            )
        chance = first["chance"]
        lines.append(
            _row(
                "chance",
                [100 * chance["i2t"][f"r{k}"] for k in RECALL_KS],
                [100 * chance["t2i"][f"r{k}"] for k in RECALL_KS],
            )
        )
        # Published figures are Flickr30k 1K's; none are printed for another protocol.
        published = results["published"] if protocol == "1k" else {}
        for label, figures in published.items():
            lines.append(_row(label + ", zero-shot", figures["tr"], figures["ir"]))
        if not published:
            lines.append(f"{'published zero-shot':<22} not published here")
    return "\n".join(lines)
