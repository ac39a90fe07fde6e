"""Train the demo content heads ("lait-demo-nonnatural", "lait-demo-watermark") on the demo
CLIP's image embedding, and measure them on images they were not trained on.

    python scripts/train_content_heads.py                # train, save, measure (minutes)

Training data: images drawn by the demo web's own generators from seed namespaces no demo
site uses ("lait-demo-heads/train", validation "lait-demo-heads/val"): plain scenes,
watermarked scenes (`lait.demo_web.graphics.watermarked`) and non-natural graphics
(`render_graphic`), a third each, each encoded as the site serves images and processed as
the download stage does (`ImageProcessor`: decode, resize, re-encode), then embedded by the
demo CLIP as CLIP scoring embeds them (`--cache DIR` keeps the rendered images, which do not
depend on the CLIP model, for the next run). Each head is a small MLP (64 -> 128 -> 1, ReLU,
about 34 KB; or a logistic regression with `--hidden 0`) on the L2-normalised embedding,
class-balanced, full-batch Adam with weight decay: `nonnatural` against scenes with and
without watermarks, `watermark` against plain scenes and graphics.

The threshold a head ships with is picked on the validation split, never on a demo site
(`choose_threshold`): the highest-recall cut whose precision, estimated at a site's base
rate (`--base-rate`, the demo web's 2.5% of images per kind), stays >= `--min-precision`.
On a rare class this is what matters: a head that is right on 95% of a balanced split flags
more clean pairs than targets on a site. Results go to
`lait/models/weights/lait-demo-heads.train.json`; `bench/filter_quality.py` measures the
heads on a demo site, end to end.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import json
import pickle
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lait.demo_web import random_scene, render_scene
from lait.demo_web.graphics import GRAPHIC_KINDS, render_graphic, watermarked
from lait.models.clip import DEMO_MODEL, WEIGHTS_DIR, encode_images, load_clip
from lait.models.content import save_content_head
from lait.record import CaptionSource, Record, Status
from pipeline.image import ImageConfig, ImageProcessor

REPORT_PATH = WEIGHTS_DIR / "lait-demo-heads.train.json"
PLAIN, WATERMARKED, GRAPHIC = 0, 1, 2


def served_image(image: Image.Image, rng: random.Random) -> bytes:
    """`image` encoded as the demo web serves its images (mostly JPEG, some PNG and WebP)."""
    image_format = rng.choices(("JPEG", "PNG", "WEBP"), (8, 1, 1))[0]
    buffer = io.BytesIO()
    if image_format == "PNG":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format=image_format, quality=rng.randint(78, 92))
    return buffer.getvalue()


def render_set(n: int, namespace: str) -> tuple[list[bytes], list[int]]:
    """`n` processed images (as the download stage stores them), a third of each class."""
    rng = random.Random(namespace)
    processor = ImageProcessor(ImageConfig())
    blank = Record.candidate(
        source="heads", url="u", caption="c", caption_source=CaptionSource.LIST
    )
    images, labels = [], []
    for i in range(n):
        label = i % 3
        width, height = rng.randint(320, 512), rng.randint(320, 512)
        if label == GRAPHIC:
            image, _ = render_graphic(rng.choice(GRAPHIC_KINDS), width, height, rng)
        else:
            image = render_scene(
                random_scene(rng, width, height), texture_seed=rng.randrange(2**31)
            )
            if label == WATERMARKED:
                image = watermarked(image, rng)
        record = processor.process(dataclasses.replace(blank, image=served_image(image, rng)))
        if record.status is Status.REJECTED or record.image is None:
            raise RuntimeError(f"training image {i} was rejected: {record.reject_detail}")
        images.append(record.image)
        labels.append(label)
    return images, labels


def cached_set(n: int, namespace: str, cache: Path | None) -> tuple[list[bytes], list[int]]:
    """`render_set(n, namespace)`, kept in `cache` (a folder) when given: the images do not
    depend on the CLIP model, so heads for a retrained CLIP reuse them."""
    if cache is None:
        return render_set(n, namespace)
    path = cache / f"{namespace.replace('/', '_')}_{n}.pickle"
    if path.exists():
        images, labels = pickle.loads(path.read_bytes())
        return list(images), list(labels)
    images, labels = render_set(n, namespace)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps((images, labels)))
    return images, labels


def embed(clip_weights: Path | None, images: list[bytes]) -> torch.Tensor:
    """The demo CLIP's L2-normalised embeddings of stored image bytes."""
    clip = load_clip(DEMO_MODEL, None if clip_weights is None else str(clip_weights))
    decoded = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
    return encode_images(clip, decoded)


def fit_head(
    x: torch.Tensor, y: torch.Tensor, hidden: int, weight_decay: float, steps: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A class-balanced MLP (one hidden ReLU layer of `hidden`; 0: a logistic regression),
    full-batch Adam: its Linear layers as (weight [out, in], bias [out])."""
    torch.manual_seed(0)
    sizes = [x.shape[1], hidden, 1] if hidden else [x.shape[1], 1]
    layers = [torch.nn.Linear(a, b) for a, b in itertools.pairwise(sizes)]
    model = torch.nn.Sequential(*(m for layer in layers for m in (layer, torch.nn.ReLU())))[:-1]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=weight_decay)
    positive_weight = (y == 0).sum() / max(1, int((y == 1).sum()))
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(x)[:, 0], y.float(), pos_weight=positive_weight
        )
        loss.backward()
        optimizer.step()
    return [(layer.weight.detach(), layer.bias.detach()) for layer in layers]


def head_probabilities(
    layers: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor
) -> torch.Tensor:
    """What `lait.models.content.ContentHead.probabilities` computes, for the training set."""
    for i, (weight, bias) in enumerate(layers):
        x = x @ weight.T + bias
        if i < len(layers) - 1:
            x = torch.relu(x)
    return torch.sigmoid(x[:, 0])


def precision_recall(p: torch.Tensor, y: torch.Tensor, threshold: float) -> dict[str, float]:
    """Precision and recall of `p > threshold` against labels `y` (1 = target)."""
    predicted = p > threshold
    tp = int((predicted & (y == 1)).sum())
    fp = int((predicted & (y == 0)).sum())
    fn = int((~predicted & (y == 1)).sum())
    return {
        "precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
        "recall": round(tp / (tp + fn), 4) if tp + fn else 1.0,
        "targets": tp + fn,
        "false_positives": fp,
        "misses": fn,
    }


def choose_threshold(
    p: torch.Tensor, y: torch.Tensor, base_rate: float, min_precision: float
) -> dict[str, Any]:
    """The threshold a head ships with, picked on its validation split (never on a site).

    The split is class-balanced, but a site is not: targets are `base_rate` of its images.
    So precision is estimated at that base rate from the split's true- and false-positive
    rates, the false-positive rate counted one more than seen ((fp + 1) / (negatives + 1)),
    so that a clean split does not promise a perfect site. Among the cuts that keep the
    estimate >= `min_precision`, those with the highest recall are taken, and the threshold
    is the middle one of them (the widest margin on both sides). Where no cut reaches it (the
    embedding does not separate the signal well enough), the cut with the highest estimate
    is taken and `meets_min_precision` says so.
    """
    positives, negatives = p[y == 1], p[y == 0]
    values = torch.unique(p).tolist()
    cuts = [(a + b) / 2 for a, b in itertools.pairwise(values)]
    best_recall, feasible = -1.0, []
    best_estimate, best_cut = (-1.0, 0.0), 0.5
    for cut in cuts:
        recall = float((positives > cut).float().mean())
        fpr = (int((negatives > cut).sum()) + 1) / (len(negatives) + 1)
        precision = base_rate * recall / (base_rate * recall + (1 - base_rate) * fpr)
        best_estimate, best_cut = max((best_estimate, best_cut), ((precision, recall), cut))
        if precision < min_precision:
            continue
        if recall > best_recall + 1e-9:
            best_recall, feasible = recall, [cut]
        elif abs(recall - best_recall) <= 1e-9:
            feasible.append(cut)
    if not feasible:
        return {
            "threshold": round(best_cut, 4),
            "meets_min_precision": False,
            "estimated_precision": round(best_estimate[0], 4),
            "val_recall": round(best_estimate[1], 4),
            "base_rate": base_rate,
            "min_precision": min_precision,
        }
    threshold = feasible[len(feasible) // 2]
    return {
        "threshold": round(threshold, 4),
        "meets_min_precision": True,
        "val_recall": round(best_recall, 4),
        "feasible_range": [round(feasible[0], 4), round(feasible[-1], 4)],
        "base_rate": base_rate,
        "min_precision": min_precision,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=15000, help="training images (3 classes)")
    parser.add_argument("--val", type=int, default=3000, help="validation images")
    parser.add_argument("--hidden", type=int, default=128, help="hidden units (0: linear)")
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument(
        "--base-rate",
        type=float,
        default=0.025,
        help="share of a site's images that are targets (the demo web's noise_rate)",
    )
    parser.add_argument("--min-precision", type=float, default=0.97)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clip-weights", type=Path, default=None, help="default: shipped")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    parser.add_argument(
        "--cache", type=Path, default=None, help="a folder to keep the rendered images in"
    )
    parser.add_argument("--render-only", action="store_true", help="render (into --cache), stop")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    train_images, train_labels = cached_set(args.train, "lait-demo-heads/train", args.cache)
    val_images, val_labels = cached_set(args.val, "lait-demo-heads/val", args.cache)
    rendered = time.perf_counter()
    if args.render_only:
        print(f"rendered {len(train_images) + len(val_images)} images in {rendered - started:.1f}s")
        return 0
    x_train, x_val = embed(args.clip_weights, train_images), embed(args.clip_weights, val_images)
    y_train, y_val = torch.tensor(train_labels), torch.tensor(val_labels)
    embedded = time.perf_counter()
    report: dict[str, object] = {
        "train_images": args.train,
        "val_images": args.val,
        "hidden": args.hidden,
        "weight_decay": args.weight_decay,
        "steps": args.steps,
        "base_rate": args.base_rate,
        "min_precision": args.min_precision,
        "render_s": round(rendered - started, 1),
        "embed_s": round(embedded - rendered, 1),
        "torch": torch.__version__,
    }
    for signal, target in (("nonnatural", GRAPHIC), ("watermark", WATERMARKED)):
        layers = fit_head(
            x_train, (y_train == target).long(), args.hidden, args.weight_decay, args.steps
        )
        p_train = head_probabilities(layers, x_train)
        p_val = head_probabilities(layers, x_val)
        chosen = choose_threshold(
            p_val, (y_val == target).long(), args.base_rate, args.min_precision
        )
        threshold = float(chosen["threshold"])
        figures: dict[str, object] = {
            "threshold": chosen,
            "train": precision_recall(p_train, (y_train == target).long(), threshold),
            "val": precision_recall(p_val, (y_val == target).long(), threshold),
        }
        path = args.out / f"lait-demo-{signal}.safetensors"
        save_content_head(
            path,
            layers,
            signal=signal,
            clip_model=DEMO_MODEL,
            threshold=threshold,
            extra={"script": "scripts/train_content_heads.py", **chosen},
        )
        figures["bytes"] = path.stat().st_size
        report[signal] = figures
        print(signal, json.dumps(figures), flush=True)
    if args.out == WEIGHTS_DIR:
        REPORT_PATH.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
