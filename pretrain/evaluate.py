"""Held-out evaluation: zero-shot image↔text retrieval R@1/5/10, and per-objective accuracy.

Retrieval as ALBEF does it: a cheap first pass ranks every caption for every image (and back)
by the cosine similarity of unimodal embeddings (ITC space), then the top-k candidates are
reranked by the single-stream ITM score. ITM accuracy is measured on each sample's true pair
and one fixed mismatched pair; MLM and MOC accuracy on the held-out captions and regions,
masked with a fixed seed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrain.checkpoint import MODEL_DIR
from pretrain.data import iter_held_out
from pretrain.model import ImageBertForPreTraining
from pretrain.objectives import itm, mlm
from pretrain.objectives.region_masking import mask_regions
from pretrain.regions import RegionsConfig, RegionSource, build_region_source
from pretrain.regions.base import Regions
from pretrain.shards import CorruptSampleError

REGIONS_FILE = "regions.json"


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


def recall_at(scores: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@k of a query x candidate score matrix whose true candidate is the diagonal."""
    truth = scores.diagonal()[:, None]
    # Ties count against the query: a model that scores everything alike gets chance, not 1.
    rank = (scores >= truth).sum(dim=1) - 1
    return {f"r{k}": float((rank < k).float().mean()) for k in ks}


def rerank_scores(sim: torch.Tensor, top: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
    """The first pass's scores with each query's top-k (`top`, queries x k) replaced by their
    reranking scores (`fused`, queries x k): above every other candidate (cosines are <= 1),
    in fused order. The shift keeps every difference; a squashing map (a sigmoid) would turn
    large fused scores into ties, which count against the query."""
    shifted = fused - fused.min(dim=1, keepdim=True).values + 2.0
    return sim.clone().scatter_(1, top, shifted.to(sim.dtype))


@torch.no_grad()
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
    max_text_len: int = 40,
    device: str = "cpu",
    seed: int = 0,
    rerank: str = "itm+itc",
) -> dict[str, Any]:
    """Evaluate a checkpoint on the held-out samples of dataset folder(s).

    `holdout` is the plan's hold-out fraction (the same image hash selects the same samples);
    1.0 evaluates every sample of the folders. Returns R@1/5/10 both ways (reranked and first
    pass), their chance level, and ITM, MLM and MOC accuracy.

    `rerank="itm"` orders the top-k by the ITM score alone (ALBEF); `"itm+itc"` (default) by
    log P_ITM(match) plus the first pass's scaled similarity, a product of the two experts that
    stays robust while ITM is still weak early in pre-training.
    """
    if rerank not in ("itm", "itm+itc"):
        raise ValueError(f"rerank is 'itm' or 'itm+itc', not {rerank!r}")
    from pretrain.text import load_tokenizer

    if isinstance(checkpoint, ImageBertForPreTraining):
        model = checkpoint
    else:
        model = ImageBertForPreTraining.from_pretrained(str(_model_folder(checkpoint)))
        if region_source is None:
            region_source = region_source_for(checkpoint, device)
        if tokenizer is None and (Path(checkpoint) / "tokenizer.json").exists():
            tokenizer = load_tokenizer(str(checkpoint))
    if region_source is None:
        raise ValueError("pass region_source when evaluating a model object")
    tokenizer = tokenizer or load_tokenizer()
    was_training = model.training
    model.to(device)  # type: ignore[arg-type]
    model.eval()
    folders = (
        [str(dataset_folder)]
        if isinstance(dataset_folder, str | os.PathLike)
        else [str(f) for f in dataset_folder]
    )
    keys: list[str] = []
    captions: list[str] = []
    prepared: list[dict[str, Any]] = []
    corrupt = 0
    for sample in iter_held_out(folders, holdout, region_source.sidecar_dir):
        if len(keys) >= max_samples:
            break
        try:
            caption = sample.caption()
            prepared.append(region_source.prepare(sample))
        except (CorruptSampleError, UnicodeDecodeError):
            corrupt += 1
            continue
        keys.append(sample.key)
        captions.append(caption)
    n = len(keys)
    if n < 2:
        raise ValueError(
            f"only {n} held-out samples in {folders} (hold-out {holdout}); evaluation needs 2+"
        )
    parts = [
        region_source.encode(region_source.collate(prepared[i : i + batch_size]), "cpu")
        for i in range(0, n, batch_size)
    ]
    if parts[0].pixels is not None:

        def on_device(x: torch.Tensor | None) -> torch.Tensor:
            assert x is not None
            return x.to(device)

        # Pixel-BERT: the regions are the model's own backbone cells (all of them in eval mode).
        cells = [model.imagebert.pixel_regions(on_device(p.pixels)) for p in parts]
        parts = [Regions(c.features.cpu(), c.boxes.cpu(), c.mask.cpu()) for c in cells]
    regions = Regions(
        torch.cat([p.features for p in parts]),
        torch.cat([p.boxes for p in parts]),
        torch.cat([p.mask for p in parts]),
        None
        if parts[0].class_probs is None
        else torch.cat([p.class_probs for p in parts if p.class_probs is not None]),
    )
    enc = tokenizer(
        captions,
        max_length=max_text_len,
        truncation=True,
        padding="longest",
        return_special_tokens_mask=True,
        return_tensors="pt",
    )
    ids, attention = enc["input_ids"], enc["attention_mask"]

    def batches(count: int) -> list[slice]:
        return [slice(i, min(i + batch_size, count)) for i in range(0, count, batch_size)]

    def on(x: torch.Tensor) -> torch.Tensor:
        return x.to(device)

    text_emb = torch.cat([model.embed_text(on(ids[s]), on(attention[s])).cpu() for s in batches(n)])
    image_emb = torch.cat(
        [
            model.embed_image(
                on(regions.features[s]), on(regions.boxes[s]), on(regions.mask[s])
            ).cpu()
            for s in batches(n)
        ]
    )
    similarity = image_emb @ text_emb.T  # images x texts

    def itm_scores(image_rows: torch.Tensor, text_rows: torch.Tensor) -> torch.Tensor:
        out = []
        for s in batches(len(image_rows)):
            im, tx = image_rows[s], text_rows[s]
            out.append(
                model.itm_scores(
                    on(ids[tx]),
                    on(attention[tx]),
                    on(regions.features[im]),
                    on(regions.boxes[im]),
                    on(regions.mask[im]),
                ).cpu()
            )
        return torch.cat(out)

    k = min(top_k, n)
    reranked = {}
    for direction, sim in (("i2t", similarity), ("t2i", similarity.T)):
        top = sim.topk(k, dim=1).indices  # queries x k
        queries = torch.arange(n)[:, None].expand(n, k).reshape(-1)
        candidates = top.reshape(-1)
        images, texts = (queries, candidates) if direction == "i2t" else (candidates, queries)
        fused = itm_scores(images, texts).view(n, k)
        if rerank == "itm+itc":
            scale = float(model.contrastive.logit_scale.clamp(max=np.log(100)).exp())
            fused = fused + scale * sim.gather(1, top)
        reranked[direction] = rerank_scores(sim, top, fused)
    result: dict[str, Any] = {
        "samples": n,
        "corrupt": corrupt,
        "top_k": k,
        "rerank": rerank,
        "chance_r1": 1.0 / n,
        "i2t": recall_at(reranked["i2t"]),
        "t2i": recall_at(reranked["t2i"]),
        "first_pass": {"i2t": recall_at(similarity), "t2i": recall_at(similarity.T)},
    }
    result["r1_mean"] = (result["i2t"]["r1"] + result["t2i"]["r1"]) / 2
    result["r1_over_chance"] = result["r1_mean"] * n

    rng = np.random.default_rng(seed)
    partner = torch.from_numpy(itm.derangement(n, rng))
    positive = itm_scores(torch.arange(n), torch.arange(n))
    negative = itm_scores(partner, torch.arange(n))
    log_half = float(np.log(0.5))
    result["itm_acc"] = float(
        ((positive > log_half).float().sum() + (negative <= log_half).float().sum()) / (2 * n)
    )

    special = enc["special_tokens_mask"].bool().numpy() | (attention == 0).numpy()
    masked_ids, labels = mlm.mask_tokens(
        ids.numpy(), special, rng, mask_token_id=tokenizer.mask_token_id, vocab_size=len(tokenizer)
    )
    generator = torch.Generator().manual_seed(seed)
    mlm_hits = moc_hits = 0.0
    mlm_total = moc_total = 0
    for s in batches(n):
        features, masked = mask_regions(regions.features[s], regions.mask[s], generator)
        out = model(
            on(torch.from_numpy(masked_ids[s])),
            on(attention[s]),
            on(features),
            on(regions.boxes[s]),
            on(regions.mask[s]),
            mlm_labels=on(torch.from_numpy(labels[s])),
            masked_regions=on(masked),
            region_probs=None if regions.class_probs is None else on(regions.class_probs[s]),
            objective_weights={"mlm": 1.0, "moc": 1.0, "mrfr": 0.0, "itm": 0.0, "itc": 0.0},
        )
        count = int((labels[s] != mlm.IGNORE).sum())
        mlm_hits += float(out.metrics["mlm_acc"]) * count
        mlm_total += count
        if "moc_acc" in out.metrics:
            regions_count = int(masked.sum())
            moc_hits += float(out.metrics["moc_acc"]) * regions_count
            moc_total += regions_count
    result["mlm_acc"] = mlm_hits / max(mlm_total, 1)
    if moc_total:
        result["moc_acc"] = moc_hits / moc_total
    if was_training:
        model.train()
    return result
