"""Bench: the pretrainer's variants against the clip-grid ImageBERT, at the same demo budget.

Trains each variant's stage plan (pretrain/plans/) on the demo dataset folders with the demo
plan's steps and batch size, then reports held-out ITM accuracy and retrieval R@1 on every
source's hold-out (the same samples for all). The named peer is `clip-grid` (demo.yaml):

    clip-grid   demo.yaml       frozen CLIP patch tokens (the default)
    pixelbert   pixelbert.yaml  a small ResNet over pixels, trained end to end from scratch
    softmask    softmask.yaml   clip-grid + focal ITC, soft-masked ITM, augmented ITC views

    python bench/variants.py --data out/demo [--variants clip-grid,pixelbert] [--steps-scale 1]

    python bench/variants.py --smoke        # 2 steps each on small synthetic folders: seconds

`lait demo --no-pretrain --out out/demo` writes the data. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PLANS = Path(__file__).resolve().parents[1] / "pretrain" / "plans"
VARIANTS = {"clip-grid": "demo.yaml", "pixelbert": "pixelbert.yaml", "softmask": "softmask.yaml"}


def smoke_data(root: Path) -> str:
    """Small demo-like folders (`root/web`, `root/cc_sbu`) for `--smoke` without `--data`."""
    from pretrain.synthetic import write_scene_folder

    write_scene_folder(str(root / "web"), 32, seed=0)
    write_scene_folder(str(root / "cc_sbu"), 32, seed=1, source="cc_sbu")
    return str(root)


def train_and_evaluate(
    variant: str, data: str, out: str, steps_scale: float, smoke: bool = False
) -> dict[str, Any]:
    import yaml

    from pretrain.trainer import run_plan

    plan = yaml.safe_load((PLANS / VARIANTS[variant]).read_text())
    plan["data_root"] = data
    plan["evaluate"]["after_each_stage"] = False
    for stage in plan["stages"]:
        stage["steps"] = max(1, round(stage["steps"] * steps_scale))
    if smoke:  # 2 steps per stage, small batches, no loader process
        plan.update(num_workers=0, holdout=0.25)
        plan["evaluate"]["max_samples"] = 16
        for stage in plan["stages"]:
            stage.update(steps=2, batch_size=4, warmup_steps=1)
    started = time.monotonic()
    result = run_plan(plan, out_dir=out, progress=False)
    seconds = time.monotonic() - started
    metrics = result["final_eval"]
    return {
        "steps": sum(s["steps"] for s in result["stages"]),
        "train_seconds": round(sum(s["seconds"] for s in result["stages"]), 1),
        "total_seconds": round(seconds, 1),
        "samples": metrics["samples"],
        "itm_acc": round(metrics["itm_acc"], 4),
        "r1_mean": round(metrics["r1_mean"], 4),
        "chance_r1": round(metrics["chance_r1"], 4),
        "mlm_acc": round(metrics["mlm_acc"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--data", help="the demo output folder (web/, cc_sbu/)")
    parser.add_argument("--variants", default="clip-grid,pixelbert")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="scale every stage's steps")
    parser.add_argument("--smoke", action="store_true", help="2 steps a stage, synthetic folders")
    args = parser.parse_args()
    if not (args.data or args.smoke):
        parser.error("--data is required (or --smoke); `lait demo --no-pretrain --out out/demo`")
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    figures: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or smoke_data(Path(tmp) / "data")
        for name in names:
            figures[name] = train_and_evaluate(
                name, data, f"{tmp}/{name}", args.steps_scale, smoke=args.smoke
            )
            f = figures[name]
            print(
                f"{name:10s} ITM acc {f['itm_acc']:.3f}  R@1 {f['r1_mean']:.3f} "
                f"(chance {f['chance_r1']:.3f})  {f['steps']} steps in {f['train_seconds']} s"
            )
    out: dict[str, Any] = {
        "bench": "variants",
        "steps_scale": args.steps_scale,
        "smoke": args.smoke,
        **figures,
    }
    if "clip-grid" in figures:
        peer = figures["clip-grid"]["itm_acc"]
        for name in names:
            if name != "clip-grid":
                out[f"{name}_itm_over_clip_grid"] = round(figures[name]["itm_acc"] / peer, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
