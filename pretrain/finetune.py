"""Retrieval fine-tuning as ImageBERT does it: binary image-text classification over each
positive pair and hard negatives, on a Karpathy-format benchmark's training split.

    result = finetune("runs/x/02-cc_sbu/final", "dataset_flickr30k.json", "flickr30k-images/",
                      "runs/x/flickr30k-ft", FinetuneConfig(epochs=5))

Each step takes a batch of (caption, image) positives. For every positive, `negatives` hard
negative captions (for its image) and `negatives` hard negative images (for its caption) are
drawn from the batch with probability softmax(ITC similarity), as ALBEF samples them, from the
model's own `embed_text`/`embed_image` and `contrastive.logit_scale`; never a pair of the same
image (content) nor the same caption text, which would be a positive labelled negative. The ITM
head classifies every pair, matched or not (cross-entropy: ImageBERT's binary classification
loss). `itc_weight` > 0 adds the contrastive loss on the batch (ALBEF fine-tunes with both; 0,
the default, is the paper's binary loss alone).

Training reads the `train` split (and `restval` for COCO, as UNITER/ALBEF do); the `test` split
is evaluated before and after (zero-shot beside fine-tuned). The output folder is loadable as
any checkpoint: `save_pretrained` + tokenizer + `regions.json`, and `training_args.json` with
the `max_text_len` used (what `lait evaluate` reads), and `summary.json` with both evaluations.

Defaults (flags of `lait finetune`): 5 epochs, batch 32 positives, AdamW at lr 5e-5 with 10%
linear warm-up then linear decay, weight decay 0.01, gradient clipping at 1.0, one hard negative
each way per positive. These are the scale UNITER/ALBEF-style retrieval fine-tuning uses for a
pre-trained BERT-base-size model; a small or freshly pre-trained model (the demo's) wants a
larger lr (1e-4 to 1e-3).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrain.benchmark import (
    CAPTIONS_PER_IMAGE,
    ImageFiles,
    KarpathyImage,
    benchmark_name,
    evaluate_benchmark,
    read_karpathy,
)
from pretrain.evaluate import (
    REGIONS_FILE,
    TRAINING_ARGS_FILE,
    LoadedCheckpoint,
    load_checkpoint,
)
from pretrain.model import ImageBertForPreTraining
from pretrain.regions import RegionSource
from pretrain.regions.base import Regions
from pretrain.run_folder import RunFolder

SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything a fine-tuning run takes (the `lait finetune` flags)."""

    epochs: int = 5
    batch_size: int = 32  # positives per step
    lr: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    clip_grad: float = 1.0
    negatives: int = 1  # hard negatives per positive, each way (captions and images)
    itc_weight: float = 0.0  # > 0 adds the contrastive loss (ALBEF); 0: the binary loss alone
    max_steps: int | None = None  # stop early (smoke runs); None: all epochs
    max_text_len: int | None = None  # None: the checkpoint's own
    splits: tuple[str, ...] | None = None  # None: train (+ restval for COCO)
    captions_per_image: int | None = CAPTIONS_PER_IMAGE
    evaluate: bool = True  # evaluate the test split before and after
    top_k: int = 16
    eval_batch_size: int = 64
    seed: int = 0
    device: str = "cpu"
    log_every: int = 10


def hard_negatives(
    similarity: torch.Tensor, excluded: torch.Tensor, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(query row, candidate column) of up to `count` negatives per query (rows of
    `similarity`), drawn without replacement with probability softmax(similarity) among the
    columns that `excluded` does not mark; a query with fewer allowed columns gets fewer."""
    logits = similarity.float().masked_fill(excluded, float("-inf"))
    uniform = torch.rand(logits.shape, generator=generator).clamp_(1e-12, 1.0 - 1e-7)
    gumbel = logits - torch.log(-torch.log(uniform))  # Gumbel top-k: sampling w/o replacement
    k = min(count, logits.shape[1])
    picked = gumbel.topk(k, dim=1).indices
    allowed = torch.isfinite(logits.gather(1, picked))
    rows = torch.arange(len(logits))[:, None].expand_as(picked)
    return rows[allowed], picked[allowed]


class _Batches:
    """Shuffled batches of (caption, image row) positives, epoch after epoch."""

    def __init__(self, images: list[KarpathyImage], batch_size: int, seed: int) -> None:
        self.pairs = [(c, row) for row, image in enumerate(images) for c in image.captions]
        self.batch_size = min(batch_size, len(self.pairs))
        self.rng = random.Random(seed)

    @property
    def per_epoch(self) -> int:
        return max(1, len(self.pairs) // self.batch_size)

    def epoch(self) -> list[list[tuple[str, int]]]:
        order = self.pairs[:]
        self.rng.shuffle(order)
        return [
            order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(self.per_epoch)
        ]


def _batch_regions(
    model: ImageBertForPreTraining,
    source: RegionSource,
    files: ImageFiles,
    rows: list[int],
    device: str,
) -> Regions:
    regions = source.encode(source.collate([source.prepare(files[r]) for r in rows]), device)
    if regions.pixels is not None:  # Pixel-BERT: the model's trainable backbone makes them
        regions = model.imagebert.pixel_regions(regions.pixels.to(device))
    return regions


def _step_loss(
    loaded: LoadedCheckpoint,
    files: ImageFiles,
    batch: list[tuple[str, int]],
    config: FinetuneConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The binary classification loss of one batch of positives and their hard negatives."""
    model, device = loaded.model, config.device
    captions = [c for c, _ in batch]
    distinct = sorted({row for _, row in batch})
    local = torch.tensor([distinct.index(row) for _, row in batch])
    regions = _batch_regions(model, loaded.region_source, files, distinct, device)
    enc = loaded.tokenizer(
        captions,
        max_length=loaded.max_text_len,
        truncation=True,
        padding="longest",
        return_tensors="pt",
    )
    ids, attention = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    features, boxes, mask = regions.features, regions.boxes, regions.mask
    scale = model.contrastive.logit_scale.clamp(max=math.log(100)).exp()
    with torch.no_grad():
        text = model.embed_text(ids, attention)
        image = model.embed_image(features[local], boxes[local], mask[local])
        similarity = (scale * image @ text.T).cpu()  # row a's image x row b's caption
    same_image = local[:, None] == local[None, :]
    same_text = torch.tensor([[a == b for b in captions] for a in captions])
    excluded = same_image | same_text
    # Captions for each positive's image, and images for each positive's caption.
    caption_rows, caption_negatives = hard_negatives(
        similarity, excluded, config.negatives, generator
    )
    image_rows, image_negatives = hard_negatives(
        similarity.T, excluded.T, config.negatives, generator
    )
    n = len(batch)
    own = torch.arange(n)
    text_index = torch.cat([own, caption_negatives, image_rows])
    image_index = local[torch.cat([own, caption_rows, image_negatives])].to(device)
    labels = torch.cat(
        [torch.ones(n, dtype=torch.long), torch.zeros(len(text_index) - n, dtype=torch.long)]
    )
    itc_inputs: dict[str, Any] = {}
    if config.itc_weight:
        itc_inputs = {
            "itc_input_ids": ids,
            "itc_attention_mask": attention,
            "itc_region_features": features[local],
            "itc_region_boxes": boxes[local],
            "itc_region_mask": mask[local],
        }
    text_index = text_index.to(device)
    out = model(
        ids[text_index],
        attention[text_index],
        features[image_index],
        boxes[image_index],
        mask[image_index],
        itm_labels=labels.to(device),
        objective_weights={
            "mlm": 0.0,
            "moc": 0.0,
            "mrfr": 0.0,
            "itm": 1.0,
            "itc": config.itc_weight,
        },
        **itc_inputs,
    )
    assert out.loss is not None
    metrics = {name: float(value) for name, value in out.metrics.items()}
    metrics["pairs"] = float(len(text_index))
    return out.loss, metrics


def _schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then linear decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def save_finetuned(
    loaded: LoadedCheckpoint,
    checkpoint: str | os.PathLike[str],
    out: Path,
    config: FinetuneConfig,
) -> None:
    """The fine-tuned model as a checkpoint folder `lait evaluate` and `finetune` load."""
    out.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    regions = Path(checkpoint) / REGIONS_FILE
    if regions.is_file():
        shutil.copyfile(regions, out / REGIONS_FILE)
    else:
        spec = loaded.region_source.spec()
        (out / REGIONS_FILE).write_text(json.dumps(spec, indent=2), encoding="utf-8")
    args = {
        "max_text_len": loaded.max_text_len,
        "from": str(checkpoint),
        "finetune": asdict(config),
    }
    (out / TRAINING_ARGS_FILE).write_text(json.dumps(args, indent=2), encoding="utf-8")


def finetune(
    checkpoint: str | os.PathLike[str],
    karpathy_json: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: FinetuneConfig | None = None,
    *,
    benchmark: str | None = None,
    region_source: RegionSource | None = None,
    tokenizer: Any = None,
    log: Any = None,
) -> dict[str, Any]:
    """Fine-tune a checkpoint for retrieval on a Karpathy-format benchmark; save it in
    `out_dir`. Returns (and writes as `summary.json`) the losses per step and, with
    `config.evaluate`, the test split's figures before (`zero_shot`) and after (`finetuned`).
    `log` (e.g. `print`) gets a progress line every `config.log_every` steps.

    `out_dir` may be a bucket folder (gs://, s3://): it is checked before any work (no such
    bucket, no credentials, no permission: `OutputLocationError`), the model is saved in a
    local temporary folder and uploaded whole, `summary.json` last."""
    run = RunFolder(out_dir)
    try:
        run.check()
        result = _finetune_into(
            run.local,
            run.url(),
            checkpoint,
            karpathy_json,
            images_dir,
            config or FinetuneConfig(),
            benchmark=benchmark,
            region_source=region_source,
            tokenizer=tokenizer,
            log=log,
        )
        run.publish()  # the model, then the summary: a folder with a summary is whole
        (run.local / SUMMARY_FILE).write_text(json.dumps(result, indent=1), encoding="utf-8")
        run.publish(SUMMARY_FILE)
        return result
    finally:
        run.close()


def _finetune_into(
    out: Path,
    out_name: str,
    checkpoint: str | os.PathLike[str],
    karpathy_json: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    config: FinetuneConfig,
    *,
    benchmark: str | None,
    region_source: RegionSource | None,
    tokenizer: Any,
    log: Any,
) -> dict[str, Any]:
    """`finetune`'s work, saved into the local folder `out` (named `out_name` to the user)."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    loaded = load_checkpoint(
        checkpoint,
        region_source=region_source,
        tokenizer=tokenizer,
        max_text_len=config.max_text_len,
        device=config.device,
    )
    name = benchmark_name(karpathy_json, benchmark)
    splits = config.splits or (("train", "restval") if name == "coco" else ("train",))
    train = read_karpathy(
        karpathy_json, images_dir, splits, captions_per_image=config.captions_per_image
    )
    if len(train) < 2:
        raise ValueError(f"fine-tuning needs 2+ training images; {'+'.join(splits)} has 1")

    def evaluated() -> dict[str, Any]:
        return evaluate_benchmark(
            loaded,
            karpathy_json,
            images_dir,
            benchmark=name,
            top_k=config.top_k,
            batch_size=config.eval_batch_size,
            device=config.device,
        )

    result: dict[str, Any] = {"benchmark": name, "splits": list(splits), "images": len(train)}
    if config.evaluate:
        result["zero_shot"] = evaluated()
    model = loaded.model
    model.to(config.device)  # type: ignore[arg-type]
    model.train()
    batches = _Batches(train, config.batch_size, config.seed)
    total = batches.per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _schedule(s, total, int(config.warmup_ratio * total))
    )
    generator = torch.Generator().manual_seed(config.seed)
    files = ImageFiles(train)
    history: list[dict[str, float]] = []
    started = time.monotonic()
    step = 0
    while step < total:
        for batch in batches.epoch():
            if step >= total:
                break
            loss, metrics = _step_loss(loaded, files, batch, config, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
            optimizer.step()
            scheduler.step()
            step += 1
            history.append({"step": step, "loss": loss.item(), **metrics})
            if log is not None and (step % config.log_every == 0 or step == total):
                log(f"step {step}/{total} loss {loss.item():.4f} itm acc {metrics['itm_acc']:.3f}")
    model.eval()
    result.update(
        steps=step,
        seconds=round(time.monotonic() - started, 2),
        losses=[h["loss"] for h in history],
        history=history,
    )
    save_finetuned(loaded, checkpoint, out, config)
    result["checkpoint"] = out_name
    if config.evaluate:
        result["finetuned"] = evaluated()
    return result
