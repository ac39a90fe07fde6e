"""Word grounding on the demo: train `pretrain/plans/grounding.yaml`, print held-out point
accuracy beside chance (the mean box area fraction).

    python bench/grounding.py --data DIR      # DIR from `lait demo --no-pretrain --out DIR`

Without --data it first builds the demo datasets (about a minute). The last line printed is a
JSON object: point_acc, chance, their ratio, the held-out words counted, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "pretrain" / "plans" / "grounding.yaml"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a `lait demo --no-pretrain` output folder")
    parser.add_argument("--out", help="where to train (default: a temporary folder)")
    parser.add_argument("--steps", type=int, help="override the plan's steps")
    args = parser.parse_args(argv)

    from pretrain.trainer import run_plan

    work = Path(args.out or tempfile.mkdtemp(prefix="lait-grounding-"))
    data = Path(args.data) if args.data else work / "demo"
    if not args.data:
        from lait.cli import main as lait

        lait(["demo", "--no-pretrain", "--no-progress", "--out", str(data)])
    overrides: dict[str, Any] = {"data_root": str(data)}
    if args.steps:
        overrides["stages.*.steps"] = args.steps
    started = time.monotonic()
    result = run_plan(PLAN, out_dir=work / "run", overrides=overrides, resume=False, progress=False)
    seconds = time.monotonic() - started
    figures = result["grounding_eval"]
    stage = result["stages"][0]
    summary = {
        "point_acc": round(figures["point_acc"], 4),
        "chance": round(figures["chance"], 4),
        "over_chance": round(figures["point_acc"] / max(figures["chance"], 1e-9), 2),
        "held_out_samples": figures["samples"],
        "held_out_tokens": figures["tokens"],
        "point_l1": round(figures["point_l1"], 4),
        "steps": stage["steps"],
        "grounding_loss_first": round(stage["first"].get("grounding", float("nan")), 4),
        "grounding_loss_last": round(stage["last"].get("grounding", float("nan")), 4),
        "train_seconds": round(seconds, 1),
    }
    print(f"held-out point accuracy {summary['point_acc']:.3f} (chance {summary['chance']:.3f})")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
