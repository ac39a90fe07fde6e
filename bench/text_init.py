"""Bench: the text side started from BERT (the shipped MiniLM) against a random one, same steps.

Trains stage 1 of pretrain/plans/text_init.yaml (the demo plan at MiniLM's size: 384 hidden x 6
layers, 12 heads) twice on the demo web folder, once with the text side from MiniLM
(`text_model: default`) and once random (`text_model: none`, the named peer): the same sizes,
steps, schedule, seed and batches. Both are evaluated on the same held-out samples; prints
held-out MLM accuracy and reranked R@1 of each and the ratios BERT / random.

    python bench/text_init.py --data out/demo [--steps 450] [--seeds 0 1]
    python bench/text_init.py --smoke      # a few steps on its own small scene folder

`lait demo --no-pretrain --out out/demo` writes the data. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PLAN = Path(__file__).resolve().parents[1] / "pretrain" / "plans" / "text_init.yaml"
ARMS = {"bert": "default", "random": "none"}  # arm → the plan's text_model


def stage_one_plan(data: str, text_model: str, args: argparse.Namespace, seed: int) -> Any:
    """Stage 1 of text_init.yaml on `data`/web, with the bench's steps, batch and seed."""
    import yaml

    plan = yaml.safe_load(PLAN.read_text())
    plan.update(data_root=data, text_model=text_model, seed=seed, holdout=args.holdout)
    plan["evaluate"]["after_each_stage"] = False
    stage = {**plan["stages"][0], "steps": args.steps}
    if args.batch_size:
        stage["batch_size"] = args.batch_size
    stage["warmup_steps"] = min(stage["warmup_steps"], max(1, args.steps // 10))
    plan["stages"] = [stage]
    if args.smoke:
        plan["num_workers"] = 0  # no loader process to start for a handful of batches
    return plan


def train_and_evaluate(
    arm: str, data: str, out: str, regions: Any, args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    from pretrain.evaluate import evaluate
    from pretrain.trainer import run_plan

    plan = stage_one_plan(data, ARMS[arm], args, seed)
    result = run_plan(plan, out_dir=out, progress=False, region_source=regions, final_eval=False)
    metrics = evaluate(
        result["final"],
        f"{data}/web",
        holdout=args.holdout,
        region_source=regions,
        max_samples=args.max_samples,
        top_k=16,
    )
    first_pass = (metrics["first_pass"]["i2t"]["r1"] + metrics["first_pass"]["t2i"]["r1"]) / 2
    return {
        "train_seconds": result["stages"][0]["seconds"],
        "samples": metrics["samples"],
        "chance_r1": metrics["chance_r1"],
        "mlm_acc": metrics["mlm_acc"],
        "r1": metrics["r1_mean"],
        "first_pass_r1": first_pass,
        "itm_acc": metrics["itm_acc"],
    }


def smoke_data(root: Path) -> str:
    """A small demo-web-like folder (`root/web`) for `--smoke` without `--data`."""
    from pretrain.synthetic import write_scene_folder

    write_scene_folder(str(root / "web"), 48, seed=0)
    return str(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--data", help="the demo output folder (its web/ is trained on)")
    parser.add_argument("--steps", type=int, help="training steps per arm (default: the plan's)")
    parser.add_argument("--batch-size", type=int, help="default: the plan's")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    parser.add_argument("--holdout", type=float, default=0.15)
    parser.add_argument("--max-samples", type=int, default=500, help="held-out samples scored")
    parser.add_argument("--smoke", action="store_true", help="a few steps; seconds, not hours")
    args = parser.parse_args()
    if args.smoke:
        args.steps = args.steps or 2
        args.batch_size = args.batch_size or 4
        args.holdout, args.max_samples = 0.25, 16
    elif not args.data:
        parser.error("--data is required (or --smoke); `lait demo --no-pretrain --out out/demo`")
    from pretrain.plan import load_plan
    from pretrain.regions import build_region_source

    shipped = load_plan(PLAN)
    if args.steps is None:
        args.steps = shipped.stages[0].steps
    # One region source for both arms: the same CLIP features, loaded once.
    regions = build_region_source(shipped.regions)
    figures: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or smoke_data(Path(tmp))
        for seed in args.seeds:
            for arm in ARMS:
                metrics = train_and_evaluate(
                    arm, data, f"{tmp}/run-{arm}-{seed}", regions, args, seed
                )
                figures[arm].append(metrics)
                print(
                    f"seed {seed} {arm:6s} MLM acc {metrics['mlm_acc']:.3f}  R@1 "
                    f"{metrics['r1']:.3f} (first pass {metrics['first_pass_r1']:.3f}, chance "
                    f"{metrics['chance_r1']:.3f})  ITM acc {metrics['itm_acc']:.3f}  "
                    f"{args.steps} steps in {metrics['train_seconds']:.0f} s",
                    flush=True,
                )

    def mean(arm: str, key: str) -> float:
        return statistics.fmean(m[key] for m in figures[arm])

    summary = {
        arm: {
            key: round(mean(arm, key), 4)
            for key in ("mlm_acc", "r1", "first_pass_r1", "itm_acc", "train_seconds")
        }
        for arm in ARMS
    }
    mlm_ratio = summary["bert"]["mlm_acc"] / max(summary["random"]["mlm_acc"], 1e-9)
    r1_ratio = summary["bert"]["r1"] / max(summary["random"]["r1"], 1e-9)
    print(
        f"mean over seeds {args.seeds}: BERT / random MLM acc {mlm_ratio:.2f}x, "
        f"R@1 {r1_ratio:.2f}x (BERT init should win: > 1)"
    )
    print(
        json.dumps(
            {
                "bench": "text_init",
                "smoke": args.smoke,
                "steps": args.steps,
                "seeds": args.seeds,
                "held_out": figures["bert"][0]["samples"],
                "chance_r1": round(figures["bert"][0]["chance_r1"], 4),
                **summary,
                "mlm_acc_ratio": round(mlm_ratio, 3),
                "r1_ratio": round(r1_ratio, 3),
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
