"""Word grounding on the demo: train `pretrain/plans/grounding.yaml`, print held-out point
accuracy beside chance (the mean box area fraction).

    python bench/grounding.py --data DIR      # DIR from `lait demo --no-pretrain --out DIR`

Without --data it first builds the demo datasets (about a minute). `--smoke` trains 2 steps on a
small synthetic scene folder with its narratives instead (seconds). The last line printed is a
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


def smoke_plan(data: Path) -> dict[str, Any]:
    """The grounding plan on a small synthetic web folder (with narratives), batch 4, no loader
    process: what `--smoke` trains, so the bench's whole path runs in seconds."""
    import yaml

    from pretrain.synthetic import write_scene_folder

    narratives = data / "lists" / "narratives.jsonl"
    narratives.parent.mkdir(parents=True, exist_ok=True)
    write_scene_folder(str(data / "web"), 48, seed=0, narratives=str(narratives))
    plan: dict[str, Any] = yaml.safe_load(PLAN.read_text())
    plan.update(num_workers=0, holdout=0.25)
    plan["evaluate"]["max_samples"] = 16
    stage = plan["stages"][0]
    stage.update(batch_size=4, warmup_steps=1)
    stage["sources"] = [{"path": "{data_root}/web", "weight": 1.0, "narratives": str(narratives)}]
    return plan


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a `lait demo --no-pretrain` output folder")
    parser.add_argument("--out", help="where to train (default: a temporary folder)")
    parser.add_argument("--steps", type=int, help="override the plan's steps")
    parser.add_argument("--smoke", action="store_true", help="2 steps on 48 synthetic scenes")
    args = parser.parse_args(argv)

    from pretrain.trainer import run_plan

    work = Path(args.out or tempfile.mkdtemp(prefix="lait-grounding-"))
    data = Path(args.data) if args.data else work / "demo"
    plan: Path | dict[str, Any] = PLAN
    if args.smoke and not args.data:
        plan = smoke_plan(data)
    elif not args.data:
        from lait.cli import main as lait

        lait(["demo", "--no-pretrain", "--no-progress", "--out", str(data)])
    overrides: dict[str, Any] = {"data_root": str(data)}
    if args.steps or args.smoke:
        overrides["stages.*.steps"] = args.steps or 2
    started = time.monotonic()
    result = run_plan(plan, out_dir=work / "run", overrides=overrides, resume=False, progress=False)
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
        "smoke": args.smoke,
    }
    print(f"held-out point accuracy {summary['point_acc']:.3f} (chance {summary['chance']:.3f})")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
