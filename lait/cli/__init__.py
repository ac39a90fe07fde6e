"""The `lait` command: one entry point, a subcommand per job.

This is the one place that dispatches to `pipeline/`, `dedupe/` and `pretrain/`; each
subcommand imports its package only when it runs, so `lait --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lait import __version__
from lait.cli.demo import DEMO_IMAGES, add_demo

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig

EPILOG = """\
Typical use:
  lait demo                          the whole job on the embedded demo web, offline
  lait crawl --pages-file urls.txt --out ds/ --set clip.model=ViT-B-32 \\
      --set clip.pretrained=laion2b_s34b_b79k [--runner DataflowRunner --project P ...]
  lait download --cc cc.tsv --out cc/ --set clip.model=...   url+caption lists (CC, SBU)
  lait dedupe ds1/ ds2/ --out ds/    deduplicate several crawls together
  lait info ds/                      what a dataset folder holds, and whether its counts add up
  lait report ds/                    the quality report: ds/report.html, to open in a browser
  lait pretrain plan.yaml --out runs/x   staged ImageBERT pre-training (resumes on rerun)
  lait evaluate runs/x/02-cc_sbu/final ds/   held-out retrieval R@1/5/10, ITM/MLM/MOC acc
  lait evaluate CKPT --karpathy-json dataset_flickr30k.json --images DIR   Flickr30k/COCO
  lait finetune CKPT --karpathy-json ... --images DIR --out ft/   retrieval fine-tuning

Beam pipeline options (--runner, --project, --region, --temp_location, --num_workers,
--sdk_container_image, ...) are passed through to Apache Beam by `crawl` and `download`.
`crawl` and `download` need a CLIP model named (clip.model, clip.pretrained) or CLIP off
(--set clip.enabled=false): the shipped lait-demo-clip knows only the demo web.
"""


def _add_demo_web(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo_web = commands.add_parser(
        "demo-web",
        help="the embedded demo web: a synthetic site with known noise, served on 127.0.0.1",
        description="The embedded demo web: pages, images and url+caption lists generated "
        "deterministically from a seed, with ground-truth labels for every injected noise kind.",
    )
    actions = demo_web.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve = actions.add_parser(
        "serve",
        help="serve the demo web on 127.0.0.1 until Ctrl-C",
        description="Serve the demo web on 127.0.0.1 until Ctrl-C; prints its URLs.",
    )
    serve.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    _add_site_options(serve)
    serve.set_defaults(run=_run_demo_web_serve)
    truth = actions.add_parser(
        "ground-truth",
        help="write the demo web's ground-truth labels as JSONL",
        description="Write the ground truth (noise labels, scenes, true captions) as JSONL. "
        "URLs are paths; prefix them with the base URL the server prints.",
    )
    truth.add_argument("out", help="output .jsonl file")
    _add_site_options(truth)
    truth.set_defaults(run=_run_demo_web_ground_truth)


def _add_site_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument(
        "--images",
        type=int,
        default=DEMO_IMAGES,
        help=f"scene images on the pages (default {DEMO_IMAGES}, as `lait demo`)",
    )


def _run_demo_web_serve(args: argparse.Namespace) -> int:
    from lait.demo_web import serve

    serve(seed=args.seed, port=args.port, n_images=args.images)
    return 0


def _run_demo_web_ground_truth(args: argparse.Namespace) -> int:
    from lait.demo_web import build_site

    site = build_site(seed=args.seed, n_images=args.images)
    site.ground_truth.write_jsonl(args.out)
    print(f"ground truth: {args.out}")
    return 0


def _add_info(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    info = commands.add_parser(
        "info",
        help="summarise dataset folders, check their counts, print open_clip's arguments",
        description="Print each dataset folder's funnel (candidates, each stage, accepted) and "
        "check stats.json against the parquet files. Exits 1 if the counts do not add up. "
        "Then print the --train-data and --train-num-samples of open_clip's trainer for the "
        "folders together: with several folders open_clip would count them from the first "
        "folder's sizes.json only (every folder names its shards from 00000.tar), so pass the "
        "printed total.",
    )
    info.add_argument("dataset", nargs="+", help="a LAIT dataset folder (several to mix them)")
    info.add_argument("--json", action="store_true", help="print stats.json as JSON")
    info.set_defaults(run=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    import shlex

    from lait.dataset import (
        DatasetFolder,
        StatsMismatchError,
        check_stats,
        compute_stats,
        shard_mix,
    )

    if args.json:
        every = [DatasetFolder(path).stats() for path in args.dataset]
        print(json.dumps(every[0] if len(every) == 1 else every, indent=1, ensure_ascii=False))
        return 0
    for path in args.dataset:
        folder = DatasetFolder(path)
        stats = folder.stats()
        if len(args.dataset) > 1:
            print(f"== {path}")
        print(format_funnel(stats))
        try:
            check_stats(stats)
            recount = compute_stats(path)
            if (recount["accepted"], recount["rejected"]) != (
                stats["accepted"],
                stats["rejected"],
            ):
                raise StatsMismatchError(
                    "stats.json disagrees with the parquet files; rerun the job"
                )
        except StatsMismatchError as error:
            print(f"counts do not add up in {path}: {error}", file=sys.stderr)
            return 1
        if stats["shards"]:
            print(f"shards: {stats['shards']}  webdataset: {folder.webdataset_urls()}")
        else:  # a run may accept nothing; its ledger still says why
            print("shards: 0 (no sample was accepted: see the reasons above)")
    with_samples = [path for path in args.dataset if DatasetFolder(path).shard_ids()]
    if with_samples:
        mix = shard_mix(with_samples)
        print(f"open_clip: {shlex.join(mix.open_clip_args())}")
    return 0


def _add_report(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = commands.add_parser(
        "report",
        help="write the quality report (report.html + report.json) of a dataset folder",
        description="Read a dataset folder (parquet metadata, rejects ledger, stats, a sample of "
        "shards) and write report.html, one self-contained page to audit it with, and "
        "report.json with the same figures. Memory stays bounded on any size of folder.",
    )
    report.add_argument("dataset", help="a LAIT dataset folder")
    report.add_argument("--out", help="folder for report.html/report.json (default: DATASET)")
    report.add_argument("--gallery-size", type=int, default=24, help="samples per gallery")
    report.add_argument("--seed", type=int, default=0, help="seed of the gallery samples")
    report.set_defaults(run=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from lait.report import write_report

    paths = write_report(args.dataset, args.out, gallery_size=args.gallery_size, seed=args.seed)
    print(f"report: {paths.html}\nfigures: {paths.json}")
    return 0


def _add_dedupe(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dedupe = commands.add_parser(
        "dedupe",
        help="deduplicate one or more dataset folders into a new one",
        description="Deduplicate existing dataset folders together (exact, perceptual, caption "
        "and optional semantic dedup, and evaluation-set decontamination) into a new dataset "
        "folder: survivors' shards, the inputs' rejects plus the new duplicate rejects, stats. "
        "Unrecognised options are Beam pipeline options.",
    )
    dedupe.add_argument("datasets", nargs="+", help="LAIT dataset folders")
    dedupe.add_argument("--out", required=True, help="the new dataset folder")
    dedupe.add_argument("--overwrite", action="store_true", help="replace dataset files in --out")
    dedupe.add_argument(
        "--eval-images",
        nargs="+",
        default=[],
        metavar="PATH",
        help="folders or files of evaluation images to remove from training (decontamination)",
    )
    dedupe.add_argument("--caption", action="store_true", help="also drop near-duplicate captions")
    dedupe.add_argument(
        "--phash-threshold", type=int, help="Hamming distance for near-duplicate images"
    )
    dedupe.add_argument(
        "--semantic",
        action="store_true",
        help="also drop semantic duplicates (CLIP image embeddings, computed on the workers with "
        "--clip-model; SemDeDup-style k-means, clusters from the dataset's size)",
    )
    dedupe.add_argument(
        "--semantic-threshold", type=float, help="cosine similarity that counts as a duplicate"
    )
    dedupe.add_argument(
        "--clip-model",
        help="CLIP that embeds the images for --semantic: an open_clip name, or lait-demo-clip "
        "(the demo web's)",
    )
    dedupe.add_argument("--clip-pretrained", help="its pretrained tag or a local checkpoint path")
    dedupe.add_argument("--clip-device", default="cpu", help="cpu or cuda (default cpu)")
    dedupe.add_argument("--samples-per-shard", type=int, default=1000, help="default 1000")
    dedupe.set_defaults(run=_run_dedupe, accepts_beam_options=True)


def _run_dedupe(args: argparse.Namespace) -> int:
    import dataclasses

    from dedupe import DedupeConfig
    from dedupe.embeddings import EmbeddingModel
    from pipeline.dedupe_job import dedupe_dataset

    config = DedupeConfig(
        eval_images=tuple(args.eval_images), caption=args.caption, semantic=args.semantic
    )
    if args.phash_threshold is not None:
        config = dataclasses.replace(config, phash_threshold=args.phash_threshold)
    if args.semantic_threshold is not None:
        config = dataclasses.replace(config, semantic_threshold=args.semantic_threshold)
    if args.semantic and not args.clip_model:
        print(
            "lait dedupe --semantic: name the CLIP that embeds the images with --clip-model "
            "(and --clip-pretrained); --clip-model lait-demo-clip for the demo web",
            file=sys.stderr,
        )
        return 2
    embedding_model = (
        EmbeddingModel(args.clip_model, args.clip_pretrained, args.clip_device)
        if args.semantic
        else None
    )
    stats = dedupe_dataset(
        list(args.datasets),
        args.out,
        config,
        args.beam_args,
        samples_per_shard=args.samples_per_shard,
        overwrite=args.overwrite,
        embedding_model=embedding_model,
    )
    print(format_funnel(stats))
    print(f"dataset: {args.out}")
    return 0


def _add_pretrain(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pretrain = commands.add_parser(
        "pretrain",
        help="run a staged ImageBERT pre-training plan (YAML) on dataset folders",
        description="Run a stage plan: each stage trains on its dataset folders (mixed by "
        "weight) and starts from the previous stage's checkpoint. Rerunning the same command "
        "resumes exactly where it stopped. Under torchrun it trains with DDP. Example plan: "
        "pretrain/plans/demo.yaml.",
    )
    pretrain.add_argument("plan", help="the stage plan (YAML)")
    pretrain.add_argument(
        "--out",
        required=True,
        help="run folder (checkpoints, logs): a local folder, or gs://... or s3://... (trained "
        "in a local temporary copy, each checkpoint published to the bucket as it is saved)",
    )
    pretrain.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a plan value, e.g. --set data_root=out/demo --set stages.*.steps=10",
    )
    pretrain.add_argument("--no-resume", action="store_true", help="start from scratch")
    pretrain.add_argument("--no-progress", action="store_true", help="no progress bar")
    pretrain.set_defaults(run=_run_pretrain)


def _parse_overrides(texts: list[str]) -> dict[str, object]:
    import yaml

    overrides: dict[str, object] = {}
    for text in texts:
        name, sep, raw = text.partition("=")
        if not sep or not name:
            raise ValueError(f"--set {text!r}: expected KEY=VALUE")
        overrides[name.strip()] = yaml.safe_load(raw)
    return overrides


def _run_pretrain(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from pretrain.trainer import run_plan

    transformers_logging.disable_progress_bar()  # per-checkpoint "Writing model shards" bars
    result = run_plan(
        args.plan,
        out_dir=args.out,
        overrides=_parse_overrides(args.overrides),
        resume=not args.no_resume,
        progress=not args.no_progress,
    )
    for stage in result["stages"]:
        if "resumed_from_step" in stage:
            print(f"stage {stage['stage']} resumed from step {stage['resumed_from_step']}")
    print(f"final checkpoint: {result['final']}")
    if result.get("final_eval"):
        print(format_retrieval("held-out", result["final_eval"]))
    grounding = result.get("grounding_eval") or {}
    if "point_acc" in grounding:
        print(
            f"held-out point accuracy {grounding['point_acc']:.3f} (chance "
            f"{grounding['chance']:.3f}, {grounding['tokens']} tokens of {grounding['samples']} "
            "narrated samples)"
        )
    return 0


def _add_evaluate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="retrieval R@1/5/10 (Karpathy protocol) and per-objective accuracy of a checkpoint",
        description="Evaluate a pre-trained checkpoint: image→text (TR) and text→image (IR) "
        "retrieval R@1/5/10 by the Karpathy protocol (captions grouped by image; an image's "
        "query hits when any of its captions ranks within K; ties count against the query), "
        "first pass by embedding similarity, top-k reranked by ITM. On LAIT dataset folders "
        "(held-out samples, with MLM, MOC and ITM accuracy), or on a benchmark's split from "
        "local files: --karpathy-json dataset_flickr30k.json --images DIR (Flickr30k 1K test; "
        "COCO 5K and 1K test, the 5 folds of 1K averaged), printed beside published figures.",
    )
    evaluate.add_argument("checkpoint", help="a checkpoint folder (save_pretrained layout)")
    evaluate.add_argument("datasets", nargs="*", help="LAIT dataset folders to evaluate on")
    evaluate.add_argument(
        "--holdout",
        type=float,
        default=1.0,
        help="evaluate on this held-out fraction (by image hash); 1.0 = every sample",
    )
    evaluate.add_argument("--top-k", type=int, default=16, help="candidates reranked by ITM")
    evaluate.add_argument("--max-samples", type=int, default=1000, help="default 1000")
    _add_benchmark_options(evaluate)
    evaluate.add_argument(
        "--split", default="test", help="the benchmark split to evaluate (default test)"
    )
    evaluate.add_argument("--json", action="store_true", help="print all figures as JSON")
    evaluate.set_defaults(run=_run_evaluate)


def _add_benchmark_options(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "--karpathy-json",
        required=required,
        help="a Karpathy split file (dataset_flickr30k.json, dataset_coco.json, or the demo's "
        "OUT/benchmark/dataset_demo.json)",
    )
    parser.add_argument(
        "--images", required=required, help="the benchmark's image folder (COCO: holds val2014/)"
    )
    parser.add_argument(
        "--benchmark",
        choices=("flickr30k", "coco", "custom"),
        help="which protocols to run (default: the file's `dataset` field, else custom: all "
        "images of the split)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")


def _run_evaluate(args: argparse.Namespace) -> int:
    from pretrain.evaluate import evaluate

    if args.karpathy_json or args.images:
        if not (args.karpathy_json and args.images) or args.datasets:
            raise ValueError(
                "evaluate either dataset folders, or a benchmark with both --karpathy-json and "
                "--images (not both)"
            )
        from pretrain.benchmark import evaluate_benchmark, format_table
        from pretrain.evaluate import load_checkpoint

        loaded = load_checkpoint(args.checkpoint, device=args.device)
        result = evaluate_benchmark(
            loaded,
            args.karpathy_json,
            args.images,
            benchmark=args.benchmark,
            split=args.split,
            top_k=args.top_k,
            device=args.device,
        )
        print(
            json.dumps(result, indent=1)
            if args.json
            else format_table(result, [("this checkpoint", result)])
        )
        return 0
    if not args.datasets:
        raise ValueError("give LAIT dataset folders, or --karpathy-json and --images")
    figures = evaluate(
        args.checkpoint,
        list(args.datasets),
        holdout=args.holdout,
        top_k=args.top_k,
        max_samples=args.max_samples,
        device=args.device,
    )
    print(json.dumps(figures, indent=1) if args.json else format_retrieval("eval", figures))
    return 0


def _add_finetune(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    finetune = commands.add_parser(
        "finetune",
        help="fine-tune a checkpoint for retrieval on a Karpathy-format benchmark",
        description="Retrieval fine-tuning as ImageBERT does it: binary image-text "
        "classification (the ITM head) over each positive and hard negatives drawn from the "
        "batch by ITC similarity (never the same image or caption). Trains on the train split "
        "(+ restval for COCO), evaluates the test split before and after, and saves a "
        "checkpoint folder in --out. Defaults: pretrain.finetune.FinetuneConfig.",
    )
    finetune.add_argument("checkpoint", help="a checkpoint folder (save_pretrained layout)")
    _add_benchmark_options(finetune, required=True)
    finetune.add_argument("--out", required=True, help="output checkpoint folder")
    # None: FinetuneConfig's default (not imported here: `lait --help` stays free of torch).
    finetune.add_argument("--epochs", type=int, help="passes over the train split (default 5)")
    finetune.add_argument("--batch-size", type=int, help="positives per step (default 32)")
    finetune.add_argument("--lr", type=float, help="peak AdamW learning rate (default 5e-5)")
    finetune.add_argument(
        "--negatives", type=int, help="hard negatives per positive, each way (default 1)"
    )
    finetune.add_argument(
        "--itc-weight",
        type=float,
        help="add the contrastive loss with this weight (default 0: the binary loss alone)",
    )
    finetune.add_argument("--max-steps", type=int, help="stop after this many steps")
    finetune.add_argument("--top-k", type=int, help="candidates reranked by ITM (default 16)")
    finetune.add_argument("--seed", type=int, help="default 0")
    finetune.add_argument(
        "--no-eval", action="store_true", help="skip the test split's evaluations"
    )
    finetune.add_argument("--json", action="store_true", help="print the summary as JSON")
    finetune.set_defaults(run=_run_finetune)


def _run_finetune(args: argparse.Namespace) -> int:
    from pretrain.benchmark import format_table
    from pretrain.finetune import FinetuneConfig, finetune

    given = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "negatives": args.negatives,
        "itc_weight": args.itc_weight,
        "max_steps": args.max_steps,
        "top_k": args.top_k,
        "seed": args.seed,
    }
    config = FinetuneConfig(
        **{k: v for k, v in given.items() if v is not None},
        device=args.device,
        evaluate=not args.no_eval,
    )
    result = finetune(
        args.checkpoint,
        args.karpathy_json,
        args.images,
        args.out,
        config,
        benchmark=args.benchmark,
        log=None if args.json else print,
    )
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=1))
        return 0
    losses = result["losses"]
    print(
        f"fine-tuned {result['steps']} steps in {result['seconds']} s on {result['images']} "
        f"{'+'.join(result['splits'])} images; loss {losses[0]:.4f} → {losses[-1]:.4f}"
    )
    if config.evaluate:
        columns = [("zero-shot", result["zero_shot"]), ("fine-tuned", result["finetuned"])]
        print(format_table(result["finetuned"], columns))
    print(f"checkpoint: {result['checkpoint']}")
    return 0


def _add_featurize(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    featurize = commands.add_parser(
        "featurize",
        help="precompute a plan's clip-grid regions into a dataset folder (a Beam job)",
        description="Compute each sample's regions (clip-grid: patch tokens of the frozen CLIP "
        "the pipeline scores with, boxes, zero-shot labels) once, into DATASET/regions/NNNNN.tar "
        "beside each shard, so pre-training at scale does not recompute them every epoch. "
        "Shards already featurized are skipped (a killed job resumes). Unrecognised options "
        "are Beam pipeline options.",
    )
    featurize.add_argument("dataset", help="a LAIT dataset folder")
    featurize.add_argument(
        "--plan", help="take the regions section of this stage plan (default: the demo plan)"
    )
    featurize.add_argument("--batch-size", type=int, default=64, help="default 64")
    featurize.add_argument("--device", default="cpu", help="cpu or cuda")
    featurize.add_argument("--overwrite", action="store_true", help="recompute existing ones")
    featurize.set_defaults(run=_run_featurize, accepts_beam_options=True)


def _run_featurize(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pretrain
    from pretrain.featurize import featurize_dataset
    from pretrain.plan import load_plan

    plan_path = args.plan or Path(pretrain.__file__).parent / "plans" / "demo.yaml"
    regions = load_plan(plan_path).regions
    counts = featurize_dataset(
        args.dataset,
        regions,
        args.beam_args,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        device=args.device,
    )
    print(
        f"featurized {counts['samples']} samples in {counts['shards']} shards "
        f"({counts['existing']} shards already done, {counts['skipped']} samples skipped); "
        f"regions in {args.dataset}/regions/ (settings for a plan: regions/spec.json)"
    )
    return 0


def format_retrieval(label: str, figures: dict[str, Any]) -> str:
    """Retrieval and accuracy figures as a few short lines for a terminal."""

    def recall(direction: str) -> str:
        at = figures.get(direction) or {}
        return " ".join(f"R@{k} {at.get(f'r{k}', float('nan')):.3f}" for k in (1, 5, 10))

    def number(name: str) -> str:
        value = figures.get(name)
        return f"{value:.3f}" if isinstance(value, int | float) else "n/a"

    return (
        f"{label}: image→text {recall('i2t')} | text→image {recall('t2i')}\n"
        f"  R@1 is {number('r1_over_chance')}× chance ({number('chance_r1')}); "
        f"ITM acc {number('itm_acc')}, MLM acc {number('mlm_acc')}, MOC acc {number('moc_acc')}"
    )


def format_funnel(stats: dict[str, object]) -> str:
    """The stats funnel as a few aligned lines for a terminal."""
    lines = [f"candidates {stats['candidates']:>10}"]
    funnel = stats["funnel"]
    assert isinstance(funnel, list)
    for step in funnel:
        if step["rejected"]:
            reasons = ", ".join(f"{r} {n}" for r, n in step["reasons"].items())
            lines.append(f"  {step['stage']:<13} -{step['rejected']:<8} ({reasons})")
    lines.append(f"accepted   {stats['accepted']:>10}   rejected {stats['rejected']}")
    return "\n".join(lines)


def _add_job_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by `crawl` and `download`: config, overrides, output."""
    parser.add_argument("--config", help="a YAML job config (see pipeline/config.py)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.OPTION=VALUE",
        help="override one config option, e.g. --set fetch.retries=3 (repeatable)",
    )
    parser.add_argument("--out", help="the output dataset folder (local path or gs://...)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the dataset files in --out if present (without it, the same command "
        "into the folder of a killed run resumes it: URLs already fetched are not fetched again)",
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="fetch again the candidates the run in --out rejected for transient reasons "
        "(timeouts, connection errors, 5xx, 429) and move those that now pass into new shards; "
        "on the folder of a killed run, resume it and refetch its transient failures",
    )
    parser.add_argument(
        "--allow-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="let the fetcher reach this otherwise blocked network, e.g. 127.0.0.1/32",
    )
    parser.add_argument(
        "--respect-robots-txt",
        action="store_true",
        help="consult each host's robots.txt (cached) and skip what it disallows",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(accepts_beam_options=True)


def _add_crawl(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    crawl = commands.add_parser(
        "crawl",
        help="crawl web pages (or WARC/WAT files) into a dataset folder",
        description="Crawl page URLs (or read WARC/WAT files), extract image+text candidates, "
        "filter their captions (text rules, fastText language ID), fetch and resize the images, "
        "score each pair with CLIP, deduplicate, and write a LAIT dataset folder in which every "
        "candidate is either a sample or a reject with its reason. Name the CLIP model "
        "(--set clip.model=ViT-B-32 --set clip.pretrained=TAG_OR_PATH; there is no default) "
        "or turn CLIP off (--set clip.enabled=false). Unrecognised options "
        "are Beam pipeline options (--runner DataflowRunner --project ... --region ... "
        "--temp_location gs://...).",
    )
    crawl.add_argument("--pages", nargs="+", default=[], metavar="URL", help="page URLs to crawl")
    crawl.add_argument(
        "--pages-file", help="a text file of page URLs, one per line (# starts a comment)"
    )
    crawl.add_argument("--depth", type=int, help="follow same-site links this many hops")
    crawl.add_argument("--warc", nargs="+", default=[], metavar="PATH", help="WARC files")
    crawl.add_argument("--wat", nargs="+", default=[], metavar="PATH", help="WAT files")
    _add_job_options(crawl)
    crawl.set_defaults(run=_run_crawl)


def _add_download(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    download = commands.add_parser(
        "download",
        help="download url+caption lists (Conceptual Captions, SBU, tables) into a dataset folder",
        description="Download the images of url+caption lists through the same filters, "
        "CLIP scoring and dedupe as `lait crawl`, and write a LAIT dataset folder. "
        "As for `lait crawl`, name the CLIP model (--set clip.model=...) or turn CLIP off. "
        "Unrecognised options are Beam pipeline options.",
    )
    download.add_argument(
        "--cc",
        nargs="+",
        default=[],
        metavar="PATH",
        help="Conceptual Captions TSV files (caption<TAB>url, no header)",
    )
    download.add_argument(
        "--sbu", nargs="+", default=[], metavar="PATH", help="SBU lists as url<TAB>caption TSV"
    )
    download.add_argument(
        "--sbu-pair",
        nargs=2,
        action="append",
        default=[],
        metavar=("URLS", "CAPTIONS"),
        help="SBU as distributed: a file of URLs and a line-aligned file of captions",
    )
    download.add_argument(
        "--table",
        nargs="+",
        default=[],
        metavar="PATH",
        help="parquet, CSV or JSONL tables (see --url-column, --caption-column)",
    )
    download.add_argument("--url-column", default="url", help="url column of --table files")
    download.add_argument(
        "--caption-column", default="caption", help="caption column of --table files"
    )
    _add_job_options(download)
    download.set_defaults(run=_run_download)


def _job_config(args: argparse.Namespace, sources: dict[str, object]) -> PipelineConfig:
    from pipeline.config import load_config, parse_override

    overrides = dict(parse_override(text) for text in args.overrides)
    for name, value in sources.items():
        overrides[f"sources.{name}"] = value
    if args.out:
        overrides["output.folder"] = args.out
    if args.overwrite:
        overrides["output.overwrite"] = True
    if args.retry_failed:
        overrides["output.retry_failed"] = True
    if args.allow_network:
        overrides["fetch.allowed_networks"] = args.allow_network
    if args.respect_robots_txt:
        overrides["fetch.respect_robots_txt"] = True
    return load_config(args.config, overrides)


def _run_job(args: argparse.Namespace, sources: dict[str, object], job: str) -> int:
    from pipeline.run import run_pipeline

    config = _job_config(args, sources)
    stats = run_pipeline(
        config,
        args.beam_args,
        show_progress=not args.no_progress,
        job=job,
    )
    print(format_funnel(stats))
    print(f"dataset: {config.output.folder}")
    return 0


def _run_crawl(args: argparse.Namespace) -> int:
    pages = list(args.pages)
    if args.pages_file:
        with open(args.pages_file, encoding="utf-8") as handle:
            pages += [ln.strip() for ln in handle if ln.strip() and not ln.startswith("#")]
    sources: dict[str, object] = {}
    if pages:
        sources["pages"] = pages
    if args.warc:
        sources["warc"] = args.warc
    if args.wat:
        sources["wat"] = args.wat
    if args.depth is not None:
        sources["depth"] = args.depth
    return _run_job(args, sources, "crawl")


def _run_download(args: argparse.Namespace) -> int:
    from pipeline.sources import table_format

    lists = [{"path": p, "format": "cc"} for p in args.cc]
    lists += [{"path": p, "format": "sbu"} for p in args.sbu]
    lists += [{"path": u, "captions_path": c, "format": "sbu"} for u, c in args.sbu_pair]
    lists += [
        {
            "path": path,
            "format": table_format(path),
            "url_column": args.url_column,
            "caption_column": args.caption_column,
        }
        for path in args.table
    ]
    return _run_job(args, {"lists": lists} if lists else {}, "download")


_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    add_demo,
    _add_crawl,
    _add_download,
    _add_dedupe,
    _add_info,
    _add_report,
    _add_pretrain,
    _add_evaluate,
    _add_finetune,
    _add_featurize,
    _add_demo_web,
]


def build_parser() -> argparse.ArgumentParser:
    """The `lait` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="lait",
        description="LAIT turns the web into a clean, audited image-text pre-training corpus "
        "(Apache Beam, locally or on Dataflow) and pre-trains an ImageBERT-style encoder on it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lait {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `lait` with `argv` (default: the process's arguments); return the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_beam_options", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.beam_args = extra
    try:
        code: int = args.run(args)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        # Our error types say what to do; a traceback would bury that. LAIT_DEBUG=1 shows it.
        if os.environ.get("LAIT_DEBUG"):
            raise
        print(f"lait {args.command}: error: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
