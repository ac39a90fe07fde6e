"""Bench: what the pipeline's curation is worth, in held-out retrieval.

Crawls the demo web twice with the same fetch settings: (a) curated, the pipeline as `lait
demo` runs it, and (b) raw, everything that downloaded and decoded (`pipeline.config.
unfiltered`: no text, language or CLIP filters, every caption of an image, no dedupe). Then
pre-trains the same model for the same steps on each (stage 1 of pretrain/plans/demo.yaml)
and evaluates both on the same clean held-out samples (the curated folder's hold-out split;
images are held out by a hash of their bytes in both runs, so neither trains on them, under
any caption). Prints R@1 of both and their
ratio; curated should win.

    python bench/data_value.py [--images 1200] [--steps 300] [--seeds 0 1 2]
                               [--curated DIR --raw DIR]
    python bench/data_value.py --smoke     # 60 demo images, 2 steps, one seed: seconds

The last line is one JSON object.
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

from lait.cli.demo import DEMO_IMAGES

DEMO_PLAN = Path(__file__).resolve().parents[1] / "pretrain" / "plans" / "demo.yaml"


def crawl_demo(out: Path, site_seed: int, images: int) -> dict[str, dict[str, Any]]:
    """Crawl the demo web into out/curated and out/raw; return both runs' stats."""
    from lait.demo_web import DemoWebServer, build_site
    from pipeline.clip import DEMO_CLIP_MODEL, ClipConfig
    from pipeline.config import OutputConfig, PipelineConfig, SourcesConfig, unfiltered
    from pipeline.fetch import FetchConfig
    from pipeline.run import run_pipeline

    site = build_site(seed=site_seed, n_images=images)
    stats = {}
    with DemoWebServer(site) as server:
        curated = PipelineConfig(
            sources=SourcesConfig(pages=(server.url("/index.html"),), depth=1),
            fetch=FetchConfig(allowed_networks=("127.0.0.1/32",), total_timeout_s=2.0, retries=1),
            clip=ClipConfig(model=DEMO_CLIP_MODEL),
            output=OutputConfig(folder=str(out / "curated"), samples_per_shard=200),
        )
        configs = {"curated": curated, "raw": _with_folder(unfiltered(curated), out / "raw")}
        for name, config in configs.items():
            stats[name] = run_pipeline(config, [], show_progress=False, job="crawl")
    return stats


def _with_folder(config: Any, folder: Path) -> Any:
    import dataclasses

    return dataclasses.replace(
        config, output=dataclasses.replace(config.output, folder=str(folder))
    )


def train_and_evaluate(
    folder: str,
    held_out: str,
    steps: int,
    out: str,
    holdout: float,
    seed: int,
    smoke: bool = False,
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
    plan["seed"] = seed
    if smoke:  # small batches, no loader process
        plan["num_workers"] = 0
        plan["stages"][0].update(batch_size=4, warmup_steps=1)
    result = run_plan(plan, out_dir=out, progress=False, final_eval=False)
    return evaluate(result["final"], held_out, holdout=holdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--curated", help="a curated dataset folder (default: crawl the demo)")
    parser.add_argument("--raw", help="its unfiltered twin (default: crawl the demo)")
    parser.add_argument("--site-seed", type=int, default=0, help="demo web seed")
    parser.add_argument(
        "--images", type=int, default=DEMO_IMAGES, help=f"demo web images (default {DEMO_IMAGES})"
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--holdout", type=float, default=0.15)
    parser.add_argument("--smoke", action="store_true", help="60 images, 2 steps, one seed")
    args = parser.parse_args()
    if args.smoke:
        args.images, args.steps, args.seeds, args.holdout = 60, 2, [0], 0.25
    figures: dict[str, list[dict[str, Any]]] = {"curated": [], "raw": []}
    sizes: dict[str, int] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        folders = {"curated": args.curated, "raw": args.raw}
        if not (args.curated and args.raw):
            stats = crawl_demo(Path(tmp), args.site_seed, args.images)
            folders = {name: f"{tmp}/{name}" for name in ("curated", "raw")}
            sizes = {name: s["accepted"] for name, s in stats.items()}
            print(f"crawled: curated {sizes['curated']} samples, raw {sizes['raw']} samples")
        for seed in args.seeds:
            for name in ("curated", "raw"):
                metrics = train_and_evaluate(
                    folders[name],
                    folders["curated"],
                    args.steps,
                    f"{tmp}/run-{name}-{seed}",
                    args.holdout,
                    seed,
                    smoke=args.smoke,
                )
                figures[name].append(metrics)
                print(
                    f"seed {seed} {name:8s} R@1 i2t {metrics['i2t']['r1']:.3f} "
                    f"t2i {metrics['t2i']['r1']:.3f} (first pass "
                    f"{metrics['first_pass']['i2t']['r1']:.3f}/"
                    f"{metrics['first_pass']['t2i']['r1']:.3f}; chance "
                    f"{metrics['chance_r1']:.3f}), ITM acc {metrics['itm_acc']:.3f}",
                    flush=True,
                )

    def mean(name: str, pick: Any) -> float:
        return statistics.fmean(pick(m) for m in figures[name])

    def first_pass(m: dict[str, Any]) -> float:
        return (m["first_pass"]["i2t"]["r1"] + m["first_pass"]["t2i"]["r1"]) / 2

    curated_r1 = mean("curated", lambda m: m["r1_mean"])
    raw_r1 = mean("raw", lambda m: m["r1_mean"])
    ratio = curated_r1 / max(raw_r1, 1e-9)
    print(
        f"mean over seeds {args.seeds}: curated R@1 {curated_r1:.3f}, raw {raw_r1:.3f} → "
        f"curated / raw {ratio:.2f} (curated should win: > 1)"
    )
    print(
        json.dumps(
            {
                "bench": "data_value",
                "smoke": args.smoke,
                "steps": args.steps,
                "seeds": args.seeds,
                "images": args.images,
                "samples": sizes,
                "held_out": figures["curated"][0]["samples"],
                "curated_r1": round(curated_r1, 4),
                "raw_r1": round(raw_r1, 4),
                "curated_first_pass_r1": round(mean("curated", first_pass), 4),
                "raw_first_pass_r1": round(mean("raw", first_pass), 4),
                "curated_itm_acc": round(mean("curated", lambda m: m["itm_acc"]), 4),
                "raw_itm_acc": round(mean("raw", lambda m: m["itm_acc"]), 4),
                "chance_r1": figures["curated"][0]["chance_r1"],
                "ratio": round(ratio, 3),
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
