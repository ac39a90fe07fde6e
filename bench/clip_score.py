"""CLIP scoring stage throughput vs raw batched open_clip encoding, same images, same process.

    python bench/clip_score.py [--images 512] [--batch 256]
    python bench/clip_score.py --smoke     # 32 images, one repeat: seconds

ours: the `ClipScore` stage's DoFn (`ScoreWithClip`: model loaded once in setup, then batches
of records with JPEG bytes → scored records, threshold applied), driven batch by batch as a
Beam worker drives it. peer: the same open_clip model and preprocessing called directly:
decode, preprocess, `encode_image`, tokenize, `encode_text`, normalise, cosine, per batch.
Images: demo-web scenes processed as the download stage does (≤384 px JPEG).
Last line: one JSON object with ratio, ours_per_s, peer_per_s.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.filter_quality import demo_records
from lait.demo_web import build_site
from lait.record import Record
from pipeline.clip import DEMO_CLIP_MODEL, ClipConfig
from pipeline.clip.scorer import ScoreWithClip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke", action="store_true", help="32 images, one repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.batch, args.repeats = 32, 16, 1
    records, _ = demo_records(build_site(seed=5, n_images=40 if args.smoke else 200))
    with_images = [r for r in records if r.image is not None]
    sample: list[Record] = [
        dataclasses.replace(with_images[i % len(with_images)], key=f"k{i}")
        for i in range(args.images)
    ]
    batches = [sample[i : i + args.batch] for i in range(0, len(sample), args.batch)]
    stage = ScoreWithClip(ClipConfig(model=DEMO_CLIP_MODEL, device=args.device))
    stage.setup()
    clip = stage.clip  # the very same model and preprocessing for the peer

    def peer() -> float:
        started = time.perf_counter()
        for batch in batches:
            images = [Image.open(io.BytesIO(r.image or b"")).convert("RGB") for r in batch]
            pixels = torch.stack([clip.preprocess(image) for image in images]).to(clip.device)
            with torch.inference_mode():
                image_features = clip.model.encode_image(pixels)
                tokens = clip.tokenizer([r.caption for r in batch]).to(clip.device)
                text_features = clip.model.encode_text(tokens)
                image_features = torch.nn.functional.normalize(image_features, dim=-1)
                text_features = torch.nn.functional.normalize(text_features, dim=-1)
                (image_features * text_features).sum(-1).cpu().tolist()
        return time.perf_counter() - started

    def ours() -> float:
        started = time.perf_counter()
        for batch in batches:
            for _ in stage.process(batch):
                pass
        return time.perf_counter() - started

    peer(), ours()  # warm-up
    peer_s = min(peer() for _ in range(args.repeats))
    ours_s = min(ours() for _ in range(args.repeats))
    n = len(sample)
    print(f"stage {n / ours_s:,.0f} images/s, raw open_clip {n / peer_s:,.0f} images/s")
    result = {
        "ratio": round(peer_s / ours_s, 3),
        "ours_per_s": round(n / ours_s, 1),
        "peer_per_s": round(n / peer_s, 1),
        "images": n,
        "batch": args.batch,
        "model": clip.name,
        "threads": torch.get_num_threads(),
        "smoke": args.smoke,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
