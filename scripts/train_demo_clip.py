"""Train the offline demo CLIP ("lait-demo-clip") and measure it on a demo web.

    python scripts/train_demo_clip.py                 # train, save, measure (a few minutes)
    python scripts/train_demo_clip.py --measure-only  # measure the shipped weights

Training data: random scenes from the demo web's own scene generator, drawn from a seed
namespace the demo sites never use ("lait-demo-clip/train"), rendered, JPEG-encoded and
decoded as the site serves them, each paired with a fresh true English caption per step.
A share of them (`--graphics-share`, `--watermark-share`) are what the demo web also
serves since its content filters exist: non-natural graphics (charts, screenshots, slides,
logos, banners; `lait.demo_web.graphics`) with their captions ("a bar chart of ..."), and
watermarked scenes captioned as such ("... with a watermark"), with the unwatermarked
caption as their hard negative; for `--watermark-negative-share` of the plain scenes the
hard negative is their caption "with a watermark". That is how a real CLIP's embedding
comes to carry these properties (its web captions say "chart", "stock photo"), and it is
what the content heads (`scripts/train_content_heads.py`) read. `--init` fine-tunes from
existing weights.

The shipped weights (128 px input, 16 px patches: an 8 x 8 token grid, 0.3 s a step here) are
four stages, each `--init` the one before, 1500 steps, `--threads 2`
(`lait/models/weights/lait-demo-clip.train.json` records each stage and its figures):
  1. from scratch: `--graphics-share 0.15 --watermark-share 0.3 --watermark-negative-share 0.5`
  2. `--seed 1 --lr 1e-3 --graphics-share 0.15 --watermark-share 0.4
     --watermark-negative-share 0.6 --diagonal-share 0.3`
  3. `--seed 2 --lr 5e-4 --graphics-share 0.15 --watermark-share 0.6
     --watermark-negative-share 0.8 --diagonal-share 0.5`
  4. `--seed 3 --lr 3e-4 --graphics-share 0.1 --watermark-share 0.5
     --watermark-negative-share 0.9 --diagonal-share 0.4`
On site 1000: AUC 0.99986 (recall-first cut 0.785, which `KNOWN_MIN_SCORES` ships). With its
heads (train_content_heads.py) on bench/filter_quality.py's seed-7 site, never used to choose
anything: non-natural precision/recall 1.0 / 1.0, watermark 0.967 / 0.967, CLIP 0.98 / 1.0.
What the stages taught, in order of discovery:
- at 64 px (the first shipped weights) a fine-tune with graphics and watermarks kept AUC 1.0
  but left watermarks unreadable (held-out linear probe 0.48 precision); at 96 px (12 px
  patches) graphics became separable (AUC 0.999) but watermarks not (0.83);
- at 128 px two stages gave seed-7 watermark 0.964 / 0.90 with 32-unit heads; the second
  stage's watermark emphasis is what made the mark readable (the first alone: recall 0.53);
- heads of 128 hidden units (4000 steps, weight decay 1e-5) instead of 32 raised validation
  watermark recall at no false positive from 0.81 to 0.96 on the same embedding;
- what was still missed on seed 7 were one-large-word ("diagonal") marks in white, scored
  about 0.001: `--diagonal-share` gives that style more of the watermarked scenes, after which
  they score 0.87 (still a miss) and above 0.99; the fourth stage's lower learning rate and
  more watermark hard negatives took the plain scenes that scored like watermarks from 3 to 1
  on seed 7.
Loss: symmetric InfoNCE with a learnable temperature (CLIP's). CPU, seeded: the same
command on the same torch build and thread count writes the same weights (`--threads 1` is
several times faster than 2 on a loaded machine: 1.3 s against 9 s a step here).

Measurement: a demo site with seed `--measure-seed` (not the seed the tests use); every
reference with an English caption and a servable image is scored; the matched captions
(clean) and MISMATCHED_CAPTION ones give the AUC, the gap between the lowest matched and
the highest mismatched score, and the threshold `ClipConfig` ships (mid-gap). Results go to
`lait/models/weights/lait-demo-clip.train.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lait.demo_web import (
    COLOURS,
    SHAPES,
    NoiseKind,
    Scene,
    build_site,
    describe_scene,
    random_scene,
    render_scene,
)
from lait.demo_web.graphics import GRAPHIC_KINDS, render_graphic, watermarked
from lait.models.clip import (
    DEMO_WEIGHTS_PATH,
    WEIGHTS_DIR,
    encode_images,
    encode_texts,
    load_clip,
    save_demo_weights,
)

REPORT_PATH = WEIGHTS_DIR / "lait-demo-clip.train.json"


WATERMARK_CAPTIONS = (
    "{c} with a watermark",
    "watermarked photo of {c}",
    "{c}, stock photo with a watermark",
)


@dataclasses.dataclass(frozen=True)
class TrainingImage:
    """What one training image shows: a scene (plain or watermarked) or a graphic."""

    scene: Scene | None
    watermarked: bool = False
    graphic_caption: str | None = None


def caption_of(item: TrainingImage, rng: random.Random) -> str:
    """A fresh true caption of a training image."""
    if item.scene is None:
        assert item.graphic_caption is not None
        return item.graphic_caption
    caption = describe_scene(item.scene, rng)
    if item.watermarked:
        return rng.choice(WATERMARK_CAPTIONS).format(c=caption)
    return caption


def render_training_set(
    n: int,
    seed: str,
    preprocess: object,
    graphics_share: float = 0.0,
    watermark_share: float = 0.0,
    diagonal_share: float = 0.0,
) -> tuple[torch.Tensor, list[TrainingImage]]:
    """`n` random training images as preprocessed tensors (float16), and what each shows.
    `diagonal_share` of the watermarked ones get the one-large-word style, the hardest to
    see at 8 x 8 tokens (drawn from its own stream: 0 renders what earlier runs rendered)."""
    rng = random.Random(seed)
    style_rng = random.Random(f"{seed}/watermark-style")
    pixels, scenes = [], []
    for i in range(n):
        width, height = rng.randint(320, 512), rng.randint(320, 512)
        roll = rng.random()
        if roll < graphics_share:
            image, caption = render_graphic(rng.choice(GRAPHIC_KINDS), width, height, rng)
            item = TrainingImage(None, graphic_caption=caption)
        else:
            scene = random_scene(rng, width, height)
            image = render_scene(scene, texture_seed=rng.randrange(2**31))
            marked = roll < graphics_share + watermark_share
            if marked:
                forced = "diagonal" if style_rng.random() < diagonal_share else None
                image = watermarked(image, rng, style=forced)
            item = TrainingImage(scene, watermarked=marked)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=rng.randint(78, 92))
        decoded = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        decoded = decoded.resize((width * 3 // 4, height * 3 // 4)) if i % 3 == 0 else decoded
        pixels.append(preprocess(decoded).to(torch.float16))  # type: ignore[operator]
        scenes.append(item)
    return torch.stack(pixels), scenes


def hard_negative(item: TrainingImage, rng: random.Random, watermark_share: float = 0.15) -> str:
    """A caption that is wrong about `item` in one detail: one attribute of one object, or
    (for a watermarked scene, or sometimes a plain one) the presence of the watermark."""
    if item.scene is None:
        return describe_scene(random_scene(rng), rng)
    if item.watermarked:
        return describe_scene(item.scene, rng)
    if rng.random() < watermark_share:
        return caption_of(dataclasses.replace(item, watermarked=True), rng)
    return describe_scene(perturbed(item.scene, rng), rng)


def perturbed(scene: Scene, rng: random.Random) -> Scene:
    """`scene` with one attribute of one object changed (a hard negative's scene)."""
    objects = list(scene.objects)
    i = rng.randrange(len(objects))
    attributes = ("shape", "shape", "colour", "size", "order") if len(objects) > 1 else ("shape",)
    attribute = rng.choice(attributes)
    if attribute == "order":  # the same objects in another order: other spatial words
        return dataclasses.replace(scene, objects=tuple(reversed(objects)))
    if attribute == "shape":
        taken = {o.shape for o in objects}
        value = rng.choice([s for s in SHAPES if s not in taken])
    elif attribute == "colour":
        value = rng.choice([c for c in COLOURS if c != objects[i].colour])
    else:
        value = "small" if objects[i].size == "large" else "large"
    changes: dict[str, Any] = {attribute: value}
    objects[i] = dataclasses.replace(objects[i], **changes)
    return dataclasses.replace(scene, objects=tuple(objects))


def train(args: argparse.Namespace) -> dict[str, object]:
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    if args.init is not None:
        clip = load_clip(pretrained=str(args.init))
    else:
        clip = load_clip(weights=False)
    model: Any = clip.model.train()
    started = time.perf_counter()
    pixels, scenes = render_training_set(
        args.scenes,
        f"lait-demo-clip/train/{args.seed}",
        clip.preprocess,
        args.graphics_share,
        args.watermark_share,
        args.diagonal_share,
    )
    render_s = time.perf_counter() - started
    print(f"rendered {len(scenes)} scenes in {render_s:.1f}s", flush=True)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embedding" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    rng = random.Random(f"lait-demo-clip/batches/{args.seed}")
    seen_tokens: set[int] = set()
    labels = torch.arange(args.batch)
    t0 = time.perf_counter()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        lr *= 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = rng.sample(range(len(scenes)), args.batch)
        captions = [caption_of(scenes[i], rng) for i in index]
        tokens = clip.tokenizer(captions)
        seen_tokens.update(tokens.unique().tolist())
        image_features, text_features, logit_scale = model(pixels[index].float(), tokens)[:3]
        logits = logit_scale * image_features @ text_features.T
        image_logits = logits
        if args.hard_negatives:
            # One caption per image that differs in a single attribute: teaches the model
            # that every word matters, not just most of them.
            negatives = [
                hard_negative(scenes[i], rng, args.watermark_negative_share) for i in index
            ]
            negative_tokens = clip.tokenizer(negatives)
            seen_tokens.update(negative_tokens.unique().tolist())
            negative_features = model.encode_text(negative_tokens, normalize=True)
            image_logits = torch.cat(
                [logits, logit_scale * image_features @ negative_features.T], dim=1
            )
        loss = (
            torch.nn.functional.cross_entropy(image_logits, labels)
            + torch.nn.functional.cross_entropy(logits.T, labels)
        ) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 25 == 0 or step == args.steps - 1:
            print(
                f"step {step:4d} loss {loss.item():.3f} lr {lr:.2e} "
                f"{(time.perf_counter() - t0) / (step + 1):.2f}s/step",
                flush=True,
            )
    train_s = time.perf_counter() - t0
    with torch.no_grad():  # rows of tokens never seen stay zero: the file stores them sparsely
        embedding = model.token_embedding.weight
        unseen = torch.ones(embedding.shape[0], dtype=torch.bool)
        unseen[list(seen_tokens)] = False
        embedding[unseen] = 0.0
    save_demo_weights(model, args.out)
    return {
        "init": None if args.init is None else str(args.init),
        "graphics_share": args.graphics_share,
        "watermark_share": args.watermark_share,
        "diagonal_share": args.diagonal_share,
        "seed": args.seed,
        "scenes": args.scenes,
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "hard_negatives": bool(args.hard_negatives),
        "watermark_negative_share": args.watermark_negative_share,
        "threads": torch.get_num_threads(),
        "render_s": round(render_s, 1),
        "train_s": round(train_s, 1),
        "final_loss": round(loss.item(), 4),
        "torch": torch.__version__,
    }


def roc_auc(positives: list[float], negatives: list[float]) -> float:
    """P(score of a random positive > score of a random negative), ties counting half."""
    wins = 0.0
    for p in positives:
        for n in negatives:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(positives) * len(negatives))


def measure(weights: Path, site_seed: int, n_images: int) -> dict[str, object]:
    """Score a demo site's English captions against their images; separation figures."""
    clip = load_clip(pretrained=str(weights))
    site = build_site(seed=site_seed, n_images=n_images)
    matched_images, matched_texts, mismatched_images, mismatched_texts = [], [], [], []
    for ref in site.ground_truth.references:
        if ref.language != "en" or ref.image_format is None or ref.scene is None:
            continue
        path = ref.final_url or ref.url
        resource = site.lookup(path)
        if resource is None or not resource.body:
            continue
        if ref.noise & {NoiseKind.TRUNCATED_IMAGE, NoiseKind.BROKEN_IMAGE}:
            continue
        image = Image.open(io.BytesIO(resource.body)).convert("RGB")
        if NoiseKind.MISMATCHED_CAPTION in ref.noise:
            mismatched_images.append(image)
            mismatched_texts.append(ref.caption)
        elif ref.noise == frozenset({NoiseKind.CLEAN}):
            matched_images.append(image)
            matched_texts.append(ref.caption)

    def scores(images: list[Image.Image], texts: list[str]) -> list[float]:
        pairs = (encode_images(clip, images) * encode_texts(clip, texts)).sum(-1)
        return [round(float(s), 4) for s in pairs]

    pos = scores(matched_images, matched_texts)
    neg = scores(mismatched_images, mismatched_texts)
    low, high = min(pos), max(neg)
    threshold = round((low + high) / 2, 3) if low > high else None
    # Recall first: the highest cut (midway between two matched scores) at which precision
    # on this site stays >= 0.96. Mismatched captions that read almost like the truth (one
    # shape or side changed) score close to matched ones; losing a few clean pairs is cheaper.
    recall_first = None
    for i in range(len(pos) - 1):
        cut = (sorted(pos)[i] + sorted(pos)[i + 1]) / 2
        caught = sum(n < cut for n in neg)
        if caught / (caught + i + 1) < 0.96:
            break
        recall_first = round(cut, 3)
    return {
        "site_seed": site_seed,
        "n_images": n_images,
        "matched": len(pos),
        "mismatched": len(neg),
        "auc": round(roc_auc(pos, neg), 5),
        "matched_min": low,
        "matched_p01": round(float(np.quantile(pos, 0.01)), 4),
        "matched_median": round(float(np.median(pos)), 4),
        "mismatched_max": high,
        "mismatched_median": round(float(np.median(neg)), 4),
        "threshold_mid_gap": threshold,
        "threshold_recall_first": recall_first,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", type=int, default=6000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hard-negatives", type=int, default=1, help="1: add hard negatives")
    parser.add_argument("--graphics-share", type=float, default=0.0)
    parser.add_argument("--watermark-share", type=float, default=0.0)
    parser.add_argument(
        "--diagonal-share",
        type=float,
        default=0.0,
        help="share of watermarked scenes given the one-large-diagonal-word style",
    )
    parser.add_argument(
        "--watermark-negative-share",
        type=float,
        default=0.15,
        help="share of plain scenes whose hard negative is their caption 'with a watermark'",
    )
    parser.add_argument("--init", type=Path, default=None, help="fine-tune from these weights")
    parser.add_argument("--out", type=Path, default=DEMO_WEIGHTS_PATH)
    parser.add_argument("--measure-seed", type=int, default=1000)
    parser.add_argument("--measure-images", type=int, default=1200)
    parser.add_argument("--measure-only", action="store_true")
    parser.add_argument("--report", type=Path, default=None, help="where to write the JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    report: dict[str, object] = {}
    if not args.measure_only:
        report["training"] = train(args)
    report["separation"] = measure(args.out, args.measure_seed, args.measure_images)
    report["weights_bytes"] = args.out.stat().st_size
    print(json.dumps(report, indent=2))
    report_path = args.report or (REPORT_PATH if args.out == DEMO_WEIGHTS_PATH else None)
    if report_path is not None and not args.measure_only:
        report_path.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
