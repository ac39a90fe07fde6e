"""Bench: what the pipeline's curation is worth, in held-out retrieval.

Pre-trains the same model for the same steps on (a) the curated demo dataset and (b) the raw
demo candidates (everything that downloaded: no text, language or CLIP filters, no dedupe),
then evaluates both on the same clean held-out samples (the curated folder's hold-out split,
which neither run trains on). Prints R@1 of both and their ratio; curated should win.

    python bench/data_value.py --curated out/demo/web --raw out/demo/raw_web [--steps 300]

The raw folder is a LAIT dataset folder written by the pipeline with its filters off (the
same download, every decodable image kept). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEMO_PLAN = Path(__file__).resolve().parents[1] / "pretrain" / "plans" / "demo.yaml"


def train_and_evaluate(
    folder: str, held_out: str, steps: int, out: str, holdout: float
) -> dict[str, Any]:
    import yaml

    from pretrain.evaluate import evaluate
    from pretrain.trainer import run_plan

    plan = yaml.safe_load(DEMO_PLAN.read_text())
    # Only stage 1 of the demo plan: the same model, steps and schedule for both folders.
    plan["stages"] = [
        {**plan["stages"][0], "sources": [{"path": folder, "weight": 1.0}], "steps": steps}
    ]
    plan["evaluate"]["after_each_stage"] = False
    plan["holdout"] = holdout
    result = run_plan(plan, out_dir=out, progress=False, final_eval=False)
    return evaluate(result["final"], held_out, holdout=holdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--curated", required=True, help="the curated dataset folder")
    parser.add_argument("--raw", required=True, help="the unfiltered dataset folder")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--holdout", type=float, default=0.15)
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder in (("curated", args.curated), ("raw", args.raw)):
            metrics = train_and_evaluate(
                folder, args.curated, args.steps, f"{tmp}/{name}", args.holdout
            )
            figures[name] = metrics
            print(
                f"{name:8s} R@1 i2t {metrics['i2t']['r1']:.3f} t2i {metrics['t2i']['r1']:.3f} "
                f"(chance {metrics['chance_r1']:.3f}), ITM acc {metrics['itm_acc']:.3f}"
            )
    ratio = figures["curated"]["r1_mean"] / max(figures["raw"]["r1_mean"], 1e-9)
    print(f"curated / raw R@1: {ratio:.2f} (curated should win: > 1)")
    print(
        json.dumps(
            {
                "bench": "data_value",
                "steps": args.steps,
                "curated_r1": figures["curated"]["r1_mean"],
                "raw_r1": figures["raw"]["r1_mean"],
                "chance_r1": figures["curated"]["chance_r1"],
                "ratio": ratio,
            }
        )
    )


if __name__ == "__main__":
    main()
