"""Held-out evaluation: image↔text retrieval R@1/5/10 by the Karpathy protocol, and
per-objective accuracy.

The protocol (ImageBERT, UNITER, ALBEF): samples are grouped into images (by
`RawSample.content_id`, the hash of the image bytes), so an image with five captions is one
image and five texts. Each distinct image is embedded once. Image→text (TR): an image's query
hits at K when ANY of its captions ranks within K among all texts. Text→image (IR): a caption's
query hits at K when its image ranks within K among all images.

Ties count against the query (pessimistic): a candidate scoring the same as the best true one
ranks above it. A model that scores everything alike therefore gets 0, never more than chance;
a random model gets chance. Chance is reported per direction and K: K / images for IR, and
1 - C(T - c, K) / C(T, K) for TR (an image with c of the T texts).

Ranking as ALBEF does it: a cheap first pass ranks every caption for every image (and back) by
the cosine similarity of unimodal embeddings (ITC space), then the top-k candidates are
reranked by the single-stream ITM score. ITM accuracy is measured on each caption's true image
and one fixed other image; MLM and MOC accuracy on the held-out captions and regions, masked
with a fixed seed.

Texts are tokenised at the length the checkpoint was trained with (`read_max_text_len`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from pretrain.checkpoint import MODEL_DIR
from pretrain.data import iter_held_out
from pretrain.model import ImageBertForPreTraining
from pretrain.objectives import itm, mlm
from pretrain.objectives.region_masking import mask_regions
from pretrain.regions import RegionsConfig, RegionSource, build_region_source
from pretrain.regions.base import Regions
from pretrain.shards import CorruptSampleError, RawSample

REGIONS_FILE = "regions.json"
#: Written beside a model by `lait finetune` (and, once it does, by the trainer): the
#: settings the model was trained with that evaluation must repeat (`max_text_len`).
TRAINING_ARGS_FILE = "training_args.json"
#: The plan's default text length (`StagePlan.max_text_len`), for checkpoints that say nothing.
DEFAULT_MAX_TEXT_LEN = 40
RECALL_KS = (1, 5, 10)


class EvaluationError(ValueError):
    """There is too little to evaluate on, or the evaluation is asked for something it lacks."""


def _model_folder(checkpoint: str | os.PathLike[str]) -> Path:
    folder = Path(checkpoint)
    return folder / MODEL_DIR if (folder / MODEL_DIR).is_dir() else folder


def region_source_for(checkpoint: str | os.PathLike[str], device: str = "cpu") -> RegionSource:
    """The region source a checkpoint was trained with (from its `regions.json`)."""
    path = Path(checkpoint) / REGIONS_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{checkpoint} has no {REGIONS_FILE}; pass the region source explicitly"
        )
    spec = json.loads(path.read_text())
    if spec["type"] == "clip-grid":
        config = RegionsConfig(
            type="clip-grid",
            model=spec["model"],
            vocabulary=tuple(spec["vocabulary"]),
            prompt=spec.get("prompt", "a photo of a {}."),
            pool=spec.get("pool", 1),
            features=spec.get("features", "tokens"),
            global_region=spec.get("global_region", False),
        )
    elif spec["type"] == "pixels":
        config = RegionsConfig(
            type="pixels",
            backbone=spec["backbone"],
            image_size=spec["image_size"],
            sample=spec.get("sample", 100),
        )
    else:
        config = RegionsConfig(
            type=spec["type"],
            feature_dim=spec["feature_dim"],
            num_classes=spec["num_classes"],
            max_regions=spec["max_regions"],
            member=spec.get("member", "npz"),
            sidecar_dir=spec.get("sidecar_dir"),
        )
    return build_region_source(config, device=device)


def read_max_text_len(checkpoint: str | os.PathLike[str]) -> int:
    """The text length a checkpoint was trained with, so evaluation tokenises the same way.

    Read from, in order: `CHECKPOINT/training_args.json` field `max_text_len`; the run's
    `plan.yaml` two folders up (`RUN/02-cc_sbu/final` → `RUN/plan.yaml`, stage 2's
    `max_text_len`), as the trainer lays runs out; else the plan default, 40.
    """
    folder = Path(checkpoint)
    args_file = folder / TRAINING_ARGS_FILE
    if args_file.is_file():
        value = json.loads(args_file.read_text(encoding="utf-8")).get("max_text_len")
        if isinstance(value, int) and value > 0:
            return value
    plan_file = folder.parent.parent / "plan.yaml"
    stage = re.match(r"(\d+)-", folder.parent.name)
    if plan_file.is_file() and stage:
        stages = (yaml.safe_load(plan_file.read_text(encoding="utf-8")) or {}).get("stages", [])
        index = int(stage.group(1)) - 1
        if 0 <= index < len(stages) and isinstance(stages[index].get("max_text_len"), int):
            return int(stages[index]["max_text_len"])
    return DEFAULT_MAX_TEXT_LEN


@dataclass
class LoadedCheckpoint:
    """A model with what evaluating it needs: its region source, tokenizer and text length."""

    model: ImageBertForPreTraining
    region_source: RegionSource
    tokenizer: Any
    max_text_len: int


def local_checkpoint(checkpoint: str | os.PathLike[str]) -> str:
    """A checkpoint folder as a local path: one on an object store (gs://, s3://, any fsspec
    URL) is copied to a temporary folder first (`from_pretrained` reads local files); the copy
    is removed when the process exits. Credentials come from the environment, as everywhere."""
    text = str(checkpoint)
    if "://" not in text:
        return text
    import atexit
    import shutil
    import tempfile

    import fsspec

    fs, root = fsspec.core.url_to_fs(text)
    root = root.rstrip("/")
    if not fs.isdir(root):
        raise FileNotFoundError(
            f"no checkpoint folder {text}; point at a stage's final/ folder (or a "
            "`lait finetune` output)"
        )
    local = tempfile.mkdtemp(prefix="lait-checkpoint-")
    atexit.register(shutil.rmtree, local, True)
    fs.get(root + "/", local + "/", recursive=True)
    return local


def load_checkpoint(
    checkpoint: str | os.PathLike[str] | ImageBertForPreTraining,
    *,
    region_source: RegionSource | None = None,
    tokenizer: Any = None,
    max_text_len: int | None = None,
    device: str = "cpu",
) -> LoadedCheckpoint:
    """Load a checkpoint folder (or wrap a model object) with its region source and tokenizer.

    Explicit arguments win; otherwise they come from the folder (`regions.json`, the saved
    tokenizer, `read_max_text_len`). The folder may be on an object store (`local_checkpoint`).
    A model object needs `region_source`.
    """
    from pretrain.text import load_tokenizer

    if isinstance(checkpoint, ImageBertForPreTraining):
        model = checkpoint
        max_text_len = max_text_len or DEFAULT_MAX_TEXT_LEN
    else:
        checkpoint = local_checkpoint(checkpoint)
        if not Path(checkpoint).is_dir():
            raise FileNotFoundError(
                f"no checkpoint folder {checkpoint}; point at a stage's final/ folder (or a "
                "`lait finetune` output)"
            )
        model = ImageBertForPreTraining.from_pretrained(str(_model_folder(checkpoint)))
        if region_source is None:
            region_source = region_source_for(checkpoint, device)
        if tokenizer is None and (Path(checkpoint) / "tokenizer.json").exists():
            tokenizer = load_tokenizer(str(checkpoint))
        max_text_len = max_text_len or read_max_text_len(checkpoint)
    if region_source is None:
        raise EvaluationError("pass region_source when evaluating a model object")
    return LoadedCheckpoint(model, region_source, tokenizer or load_tokenizer(), max_text_len)


@dataclass
class RetrievalSet:
    """Captions grouped by image, the Karpathy protocol's unit.

    `images[j]` is image j as a `RawSample` (its bytes, maybe a `.npz`); `image_of[t]` is the
    image of caption t. `images` may be any sequence (a lazy one reads files on access).
    """

    captions: list[str]
    image_of: list[int]
    images: Sequence[RawSample]
    corrupt: int = 0
    image_ids: list[str] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        return len(self.images)

    def keep_images(self, kept: Sequence[int]) -> RetrievalSet:
        """The set restricted to the images `kept` (others' captions dropped)."""
        row = {old: new for new, old in enumerate(kept)}
        pairs = [(c, row[i]) for c, i in zip(self.captions, self.image_of, strict=True) if i in row]
        ids = [self.image_ids[i] for i in kept] if self.image_ids else []
        return RetrievalSet(
            [c for c, _ in pairs],
            [i for _, i in pairs],
            [self.images[i] for i in kept],
            self.corrupt,
            ids,
        )


def group_by_image(samples: Iterable[RawSample], max_samples: int | None = None) -> RetrievalSet:
    """Group dataset samples into images by `content_id`, at most `max_samples` captions."""
    rows: dict[str, int] = {}
    images: list[RawSample] = []
    captions: list[str] = []
    image_of: list[int] = []
    corrupt = 0
    for sample in samples:
        if max_samples is not None and len(captions) >= max_samples:
            break
        try:
            caption = sample.caption()
        except (CorruptSampleError, UnicodeDecodeError):
            corrupt += 1
            continue
        if sample.content_id not in rows:
            rows[sample.content_id] = len(images)
            images.append(sample)
        captions.append(caption)
        image_of.append(rows[sample.content_id])
    return RetrievalSet(captions, image_of, images, corrupt, list(rows))


def recall_at(
    scores: torch.Tensor, ks: Sequence[int] = RECALL_KS, truth: torch.Tensor | None = None
) -> dict[str, float]:
    """R@k of a query x candidate score matrix; `truth` (bool, same shape) marks each query's
    true candidates (default: the diagonal). A query hits at k when its best-scoring true
    candidate ranks within k. Ties count against the query: every false candidate scoring at
    least as high as the best true one ranks above it (so a constant model scores 0)."""
    if truth is None:
        truth = torch.eye(*scores.shape, dtype=torch.bool)
    best = scores.masked_fill(~truth, float("-inf")).max(dim=1, keepdim=True).values
    rank = ((scores >= best) & ~truth).sum(dim=1)
    return {f"r{k}": float((rank < k).float().mean()) for k in ks}


def chance_recall(truth: torch.Tensor, ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """R@k of a random ranking, averaged over queries: a query with c true candidates among T
    hits at k with probability 1 - C(T - c, k) / C(T, k)."""
    total = truth.shape[1]
    counts = truth.sum(dim=1).tolist()
    return {
        f"r{k}": float(
            np.mean([1.0 - math.comb(total - c, k) / math.comb(total, k) for c in counts])
        )
        if k <= total
        else 1.0
        for k in ks
    }


def rerank_scores(sim: torch.Tensor, top: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
    """The first pass's scores with each query's top-k (`top`, queries x k) replaced by their
    reranking scores (`fused`, queries x k): above every other candidate (cosines are <= 1),
    in fused order. The shift keeps every difference; a squashing map (a sigmoid) would turn
    large fused scores into ties, which count against the query."""
    shifted = fused - fused.min(dim=1, keepdim=True).values + 2.0
    return sim.clone().scatter_(1, top, shifted.to(sim.dtype))


def _slices(count: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, count)) for i in range(0, count, batch_size)]


def encode_images(
    model: ImageBertForPreTraining,
    region_source: RegionSource,
    images: Sequence[RawSample],
    *,
    batch_size: int = 64,
    device: str = "cpu",
) -> tuple[Regions, list[int]]:
    """Each image's regions (on the CPU), and the indices of the images that decoded; a batch
    at a time, so only regions (not decoded pixels) stay in memory."""
    kept: list[int] = []
    parts: list[Regions] = []
    for s in _slices(len(images), batch_size):
        prepared = []
        for index in range(s.start, s.stop):
            try:
                prepared.append(region_source.prepare(images[index]))
            except (CorruptSampleError, UnicodeDecodeError):
                continue
            kept.append(index)
        if not prepared:
            continue
        part = region_source.encode(region_source.collate(prepared), "cpu")
        if part.pixels is not None:
            # Pixel-BERT: the regions are the model's own backbone cells (all of them in eval).
            cells = model.imagebert.pixel_regions(part.pixels.to(device))
            part = Regions(cells.features.cpu(), cells.boxes.cpu(), cells.mask.cpu())
        parts.append(part)
    if not parts:
        raise EvaluationError("no image decoded; nothing to evaluate")
    regions = Regions(
        torch.cat([p.features for p in parts]),
        torch.cat([p.boxes for p in parts]),
        torch.cat([p.mask for p in parts]),
        None
        if parts[0].class_probs is None
        else torch.cat([p.class_probs for p in parts if p.class_probs is not None]),
    )
    return regions, kept


class _Scorer:
    """Batched unimodal embeddings and ITM scores of one model over one encoded set."""

    def __init__(
        self,
        model: ImageBertForPreTraining,
        regions: Regions,
        ids: torch.Tensor,
        attention: torch.Tensor,
        batch_size: int,
        device: str,
    ) -> None:
        self.model, self.regions, self.ids, self.attention = model, regions, ids, attention
        self.batch_size, self.device = batch_size, device

    def similarity(self) -> torch.Tensor:
        """Cosine similarity, images x texts."""
        dev, r = self.device, self.regions
        text = torch.cat(
            [
                self.model.embed_text(self.ids[s].to(dev), self.attention[s].to(dev)).cpu()
                for s in _slices(len(self.ids), self.batch_size)
            ]
        )
        image = torch.cat(
            [
                self.model.embed_image(
                    r.features[s].to(dev), r.boxes[s].to(dev), r.mask[s].to(dev)
                ).cpu()
                for s in _slices(len(r.features), self.batch_size)
            ]
        )
        return image @ text.T

    def itm(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """log P(match) of each (image row, text row) pair."""
        dev, r, out = self.device, self.regions, []
        for s in _slices(len(images), self.batch_size):
            im, tx = images[s], texts[s]
            out.append(
                self.model.itm_scores(
                    self.ids[tx].to(dev),
                    self.attention[tx].to(dev),
                    r.features[im].to(dev),
                    r.boxes[im].to(dev),
                    r.mask[im].to(dev),
                ).cpu()
            )
        return torch.cat(out)


def retrieval(
    similarity: torch.Tensor,
    itm_scores: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    image_of: torch.Tensor,
    *,
    top_k: int = 16,
    rerank: str = "itm+itc",
    logit_scale: float = 1.0,
) -> dict[str, Any]:
    """TR/IR recall (reranked and first pass) and chance, for captions grouped by image.

    `similarity` is images x texts (the first pass); `itm_scores(images, texts)` scores pairs
    of rows for the rerank of each query's `top_k`; `image_of[t]` is caption t's image. With
    `rerank="itm+itc"` the rerank score adds `logit_scale` x the first pass's similarity.
    """
    n_images, n_texts = similarity.shape
    truth = torch.arange(n_images)[:, None] == image_of[None, :]  # images x texts
    reranked = {}
    for direction, sim in (("i2t", similarity), ("t2i", similarity.T)):
        queries, candidates = sim.shape
        k = min(top_k, candidates)
        top = sim.topk(k, dim=1).indices  # queries x k
        query_rows = torch.arange(queries)[:, None].expand(queries, k).reshape(-1)
        candidate_rows = top.reshape(-1)
        images, texts = (
            (query_rows, candidate_rows) if direction == "i2t" else (candidate_rows, query_rows)
        )
        fused = itm_scores(images, texts).view(queries, k)
        if rerank == "itm+itc":
            fused = fused + logit_scale * sim.gather(1, top)
        reranked[direction] = rerank_scores(sim, top, fused)
    chance = {"i2t": chance_recall(truth), "t2i": chance_recall(truth.T)}
    result: dict[str, Any] = {
        "samples": n_texts,
        "images": n_images,
        "top_k": min(top_k, n_texts),
        "rerank": rerank,
        "i2t": recall_at(reranked["i2t"], truth=truth),
        "t2i": recall_at(reranked["t2i"], truth=truth.T),
        "first_pass": {
            "i2t": recall_at(similarity, truth=truth),
            "t2i": recall_at(similarity.T, truth=truth.T),
        },
        "chance": chance,
        "chance_r1": (chance["i2t"]["r1"] + chance["t2i"]["r1"]) / 2,
    }
    result["r1_mean"] = (result["i2t"]["r1"] + result["t2i"]["r1"]) / 2
    result["r1_over_chance"] = result["r1_mean"] / result["chance_r1"]
    return result


def _accuracy(
    scorer: _Scorer,
    image_of: torch.Tensor,
    special: np.ndarray,
    tokenizer: Any,
    seed: int,
) -> dict[str, float]:
    """ITM accuracy (each caption with its image and with another image), MLM and MOC."""
    model, regions, ids, attention = scorer.model, scorer.regions, scorer.ids, scorer.attention
    dev = scorer.device
    rng = np.random.default_rng(seed)
    n_texts, n_images = len(ids), len(regions.features)
    # Another image, never the caption's own (a derangement of the images, not the captions:
    # two captions of one image are not a mismatched pair).
    other = torch.from_numpy(itm.derangement(n_images, rng))[image_of]
    positive = scorer.itm(image_of, torch.arange(n_texts))
    negative = scorer.itm(other, torch.arange(n_texts))
    log_half = float(np.log(0.5))
    out = {
        "itm_acc": float(
            ((positive > log_half).float().sum() + (negative <= log_half).float().sum())
            / (2 * n_texts)
        )
    }
    masked_ids, labels = mlm.mask_tokens(
        ids.numpy(), special, rng, mask_token_id=tokenizer.mask_token_id, vocab_size=len(tokenizer)
    )
    generator = torch.Generator().manual_seed(seed)
    mlm_hits = moc_hits = 0.0
    mlm_total = moc_total = 0
    for s in _slices(n_texts, scorer.batch_size):
        rows = image_of[s]
        features, masked = mask_regions(regions.features[rows], regions.mask[rows], generator)
        result = model(
            torch.from_numpy(masked_ids[s]).to(dev),
            attention[s].to(dev),
            features.to(dev),
            regions.boxes[rows].to(dev),
            regions.mask[rows].to(dev),
            mlm_labels=torch.from_numpy(labels[s]).to(dev),
            masked_regions=masked.to(dev),
            region_probs=None if regions.class_probs is None else regions.class_probs[rows].to(dev),
            objective_weights={"mlm": 1.0, "moc": 1.0, "mrfr": 0.0, "itm": 0.0, "itc": 0.0},
        )
        count = int((labels[s] != mlm.IGNORE).sum())
        mlm_hits += float(result.metrics["mlm_acc"]) * count
        mlm_total += count
        if "moc_acc" in result.metrics:
            regions_count = int(masked.sum())
            moc_hits += float(result.metrics["moc_acc"]) * regions_count
            moc_total += regions_count
    out["mlm_acc"] = mlm_hits / max(mlm_total, 1)
    if moc_total:
        out["moc_acc"] = moc_hits / moc_total
    return out


@torch.no_grad()
def evaluate_set(
    loaded: LoadedCheckpoint,
    retrieval_set: RetrievalSet,
    *,
    top_k: int = 16,
    batch_size: int = 64,
    device: str = "cpu",
    seed: int = 0,
    rerank: str = "itm+itc",
    accuracy: bool = True,
) -> dict[str, Any]:
    """Retrieval (and, with `accuracy`, ITM/MLM/MOC accuracy) of a model on a set of captions
    grouped by image. See the module docstring for the protocol."""
    if rerank not in ("itm", "itm+itc"):
        raise ValueError(f"rerank is 'itm' or 'itm+itc', not {rerank!r}")
    model = loaded.model
    was_training = model.training
    model.to(device)  # type: ignore[arg-type]
    model.eval()
    try:
        regions, kept = encode_images(
            model, loaded.region_source, retrieval_set.images, batch_size=batch_size, device=device
        )
        undecodable = retrieval_set.n_images - len(kept)
        if undecodable:
            retrieval_set = retrieval_set.keep_images(kept)
        if retrieval_set.n_images < 2:
            raise EvaluationError(
                f"only {retrieval_set.n_images} image(s) to evaluate on; retrieval needs 2+"
            )
        enc = loaded.tokenizer(
            retrieval_set.captions,
            max_length=loaded.max_text_len,
            truncation=True,
            padding="longest",
            return_special_tokens_mask=True,
            return_tensors="pt",
        )
        scorer = _Scorer(
            model, regions, enc["input_ids"], enc["attention_mask"], batch_size, device
        )
        image_of = torch.tensor(retrieval_set.image_of, dtype=torch.long)
        scale = float(model.contrastive.logit_scale.clamp(max=np.log(100)).exp())
        result = retrieval(
            scorer.similarity(),
            scorer.itm,
            image_of,
            top_k=top_k,
            rerank=rerank,
            logit_scale=scale,
        )
        result["corrupt"] = retrieval_set.corrupt + undecodable
        result["max_text_len"] = loaded.max_text_len
        if accuracy:
            special = (
                enc["special_tokens_mask"].bool().numpy() | (enc["attention_mask"] == 0).numpy()
            )
            result.update(_accuracy(scorer, image_of, special, loaded.tokenizer, seed))
    finally:
        if was_training:
            model.train()
    return result


def evaluate(
    checkpoint: str | os.PathLike[str] | ImageBertForPreTraining,
    dataset_folder: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    holdout: float = 1.0,
    region_source: RegionSource | None = None,
    tokenizer: Any = None,
    top_k: int = 16,
    max_samples: int = 1000,
    batch_size: int = 64,
    max_text_len: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    rerank: str = "itm+itc",
) -> dict[str, Any]:
    """Evaluate a checkpoint on the held-out samples of dataset folder(s), grouped by image.

    `holdout` is the plan's hold-out fraction (the same image hash selects the same samples);
    1.0 evaluates every sample of the folders, at most `max_samples` captions. Returns R@1/5/10
    both ways (reranked and first pass; "samples" captions of "images" images), their chance
    level (`chance`, and `chance_r1` the mean of both directions'), and ITM, MLM and MOC
    accuracy. `max_text_len` defaults to the checkpoint's own (`read_max_text_len`).

    `rerank="itm"` orders the top-k by the ITM score alone (ALBEF); `"itm+itc"` (default) by
    log P_ITM(match) plus the first pass's scaled similarity, a product of the two experts that
    stays robust while ITM is still weak early in pre-training.
    """
    loaded = load_checkpoint(
        checkpoint,
        region_source=region_source,
        tokenizer=tokenizer,
        max_text_len=max_text_len,
        device=device,
    )
    folders = (
        [str(dataset_folder)]
        if isinstance(dataset_folder, str | os.PathLike)
        else [str(f) for f in dataset_folder]
    )
    samples = group_by_image(
        iter_held_out(folders, holdout, loaded.region_source.sidecar_dir), max_samples
    )
    if samples.n_images < 2:
        raise EvaluationError(
            f"only {samples.n_images} held-out image(s) in {folders} (hold-out {holdout}); "
            "evaluation needs 2+: add data or raise the hold-out fraction"
        )
    return evaluate_set(
        loaded,
        samples,
        top_k=top_k,
        batch_size=batch_size,
        device=device,
        seed=seed,
        rerank=rerank,
    )
