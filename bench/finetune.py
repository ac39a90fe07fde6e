"""Retrieval fine-tuning vs zero-shot on the demo web's miniature benchmark.

Pre-trains a small ImageBERT (2 layers x 64, the demo plan's objectives, over the shipped demo
CLIP's regions) on a folder of demo scenes, then measures held-out retrieval on the miniature
benchmark's `test` split zero-shot, fine-tunes on its `train` split (`pretrain.finetune`), and
measures again. Prints the fine-tuned / zero-shot ratio of R@1 (mean of TR and IR, reranked
and first pass); the last line is one JSON object with every figure.

    python bench/finetune.py            # ~10 min on 2 idle CPU cores
    python bench/finetune.py --smoke    # seconds: tiny model, few steps (checks it runs)
    python bench/finetune.py --checkpoint out/demo/pretrain/02-cc_sbu/final \
        --karpathy-json out/demo/benchmark/dataset_demo.json   # lait demo's model, ~2 min

With `--checkpoint` the bench fine-tunes that checkpoint on the given benchmark instead of
pre-training its own (the weak 150-step model learns little more than ITM's class prior).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from lait.demo_web.benchmark import write_demo_benchmark
from lait.demo_web.scenes import random_scene
from pretrain.benchmark import format_table
from pretrain.finetune import FinetuneConfig, finetune
from pretrain.synthetic import write_scene_folder
from pretrain.trainer import run_plan

VOCAB = ["circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "background"]
SCENE_SIZE = 96


def pretrain_plan(folder: str, *, smoke: bool, steps: int) -> dict[str, Any]:
    model = (
        {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
        | {"intermediate_size": 64, "contrastive_dim": 16}
        if smoke
        else {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
        | {"intermediate_size": 256, "contrastive_dim": 32, "hidden_dropout_prob": 0.1}
    )
    return {
        "name": "finetune-bench",
        "seed": 0,
        "holdout": 0.0,
        "text_model": "none",
        "num_workers": 0,
        "log_every": 10,
        "save_every": 10_000,
        "model": model,
        "regions": {
            "type": "clip-grid",
            "model": "lait-demo-clip",
            "pool": 2,
            "features": "projected",
            "global_region": True,
            "prompt": "a {}.",
            "vocabulary": VOCAB,
        },
        "evaluate": {"after_each_stage": False},
        "stages": [
            {
                "name": "scenes",
                "sources": [{"path": folder}],
                "steps": steps,
                "batch_size": 32,
                "lr": 2e-3,
                "warmup_steps": min(30, steps // 5),
                "min_lr_ratio": 0.2,
                "max_text_len": 32,
                "objectives": {"mlm": 1.0, "moc": 0.25, "mrfr": 0.25, "itm": 2.0, "itc": 1.0},
            }
        ],
    }


def r1(figures: dict[str, Any], first_pass: bool = False) -> float:
    at = figures["protocols"]["all"]
    at = at["first_pass"] if first_pass else at
    return float((at["i2t"]["r1"] + at["t2i"]["r1"]) / 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, few steps")
    parser.add_argument("--scenes", type=int, default=400, help="pre-training scenes")
    parser.add_argument("--pretrain-steps", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs")
    parser.add_argument("--lr", type=float, default=2e-4, help="fine-tuning lr")
    parser.add_argument("--itc-weight", type=float, default=0.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--checkpoint", help="fine-tune this checkpoint (skips pre-training)")
    parser.add_argument("--karpathy-json", help="with --checkpoint: the benchmark's JSON")
    parser.add_argument("--images", help="its image folder (default: beside the JSON)")
    args = parser.parse_args()
    if args.checkpoint and not args.karpathy_json:
        parser.error("--checkpoint needs --karpathy-json (e.g. lait demo's benchmark)")
    if not torch.cuda.is_available():
        torch.set_num_threads(2)
    scenes, steps = (32, 4) if args.smoke else (args.scenes, args.pretrain_steps)
    n_train, n_test = (16, 8) if args.smoke else (300, 100)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.out or scratch)
        if args.checkpoint:
            checkpoint, steps = args.checkpoint, 0
            benchmark = Path(args.karpathy_json)
            images = Path(args.images) if args.images else benchmark.parent / "images"
        else:
            folder = write_scene_folder(str(root / "scenes"), scenes, seed=7, image_size=SCENE_SIZE)
            # The same scenes write_scene_folder drew (its rng draws every scene first), so
            # the benchmark holds out their content, as `lait demo` holds out the crawl's.
            rng = random.Random(7)
            seen = [random_scene(rng, SCENE_SIZE, SCENE_SIZE) for _ in range(scenes)]
            benchmark = write_demo_benchmark(
                root / "benchmark",
                n_train=n_train,
                n_test=n_test,
                image_size=SCENE_SIZE,
                exclude=seen,
            )
            images = benchmark.parent / "images"
            plan = pretrain_plan(folder, smoke=args.smoke, steps=steps)
            trained = run_plan(plan, out_dir=root / "pretrain", progress=False, final_eval=False)
            checkpoint = trained["final"]
        pretrain_seconds = time.monotonic() - started
        config = FinetuneConfig(
            epochs=1 if args.smoke else args.epochs,
            max_steps=2 if args.smoke else None,
            batch_size=8 if args.smoke else 32,
            lr=args.lr,
            itc_weight=args.itc_weight,
            device=args.device,
            log_every=25,
        )
        result = finetune(
            checkpoint,
            benchmark,
            images,
            root / "finetuned",
            config,
            log=print,
        )
    zero, tuned = result["zero_shot"], result["finetuned"]
    print(format_table(tuned, [("zero-shot", zero), ("fine-tuned", tuned)]))
    figures = {
        "zero_shot_r1": round(r1(zero), 4),
        "finetuned_r1": round(r1(tuned), 4),
        "zero_shot_first_pass_r1": round(r1(zero, True), 4),
        "finetuned_first_pass_r1": round(r1(tuned, True), 4),
        "chance_r1": round(tuned["protocols"]["all"]["chance_r1"], 4),
        "loss_first": round(result["losses"][0], 4),
        "loss_last": round(sum(result["losses"][-10:]) / len(result["losses"][-10:]), 4),
        "finetune_steps": result["steps"],
        "pretrain_steps": steps,
        "pretrain_seconds": round(pretrain_seconds, 1),
        "finetune_seconds": result["seconds"],
        "smoke": args.smoke,
    }
    ratio = figures["finetuned_r1"] / max(figures["zero_shot_r1"], 1e-9)
    figures["ratio_r1"] = round(ratio, 3)
    print(
        f"R@1 (mean of TR and IR, reranked): fine-tuned {figures['finetuned_r1']:.3f} / zero-shot "
        f"{figures['zero_shot_r1']:.3f} = {ratio:.2f}x (chance {figures['chance_r1']:.3f})"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
