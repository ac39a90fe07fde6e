"""`lait demo`: the whole job on the embedded demo web, offline, in minutes on 2 cores.

Starts the demo web on 127.0.0.1, crawls its pages into `OUT/web` (stage 1 of pre-training
reads it), fetches its Conceptual Captions and SBU lists through the same safe fetcher and
downloads them into `OUT/cc_sbu` (stage 2), and writes the ground truth beside them, with
`OUT/lists/narratives.jsonl`: Localized Narratives of its scenes (word grounding, see
`pretrain/plans/grounding.yaml`), whose `image_id`s are the shard samples' URLs, and
`OUT/benchmark/`: a miniature retrieval benchmark of held-out scenes in Karpathy's JSON format
(`lait evaluate`/`lait finetune --karpathy-json`, see `lait.demo_web.benchmark`).
It writes each folder's quality report, then runs a short two-stage pre-training (web/, then
cc_sbu/) and prints held-out retrieval against the same model untrained.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lait.demo_web import DemoSite, DemoWebServer

LOOPBACK = ("127.0.0.1/32",)


# Images on the demo web's pages. At 600 the demo's pre-training saw each of ~340 training pairs
# ~40 times and held-out ITM accuracy stayed near 0.76-0.78; at 1200 (~690 training pairs) it
# reached 0.85 (seeds 0 and 1), for ~20 s more crawling.
DEMO_IMAGES = 1200


def _fetch_lists(server: DemoWebServer, site: DemoSite, folder: Path) -> dict[str, Path]:
    """Download the demo web's url+caption lists with the safe fetcher; return local paths."""
    from pipeline.fetch import FetchConfig, Fetcher

    folder.mkdir(parents=True, exist_ok=True)
    fetcher = Fetcher(FetchConfig(allowed_networks=LOOPBACK))
    paths = {}
    try:
        for name, path in (
            ("cc", site.cc_list_path),
            ("sbu_urls", site.sbu_urls_path),
            ("sbu_captions", site.sbu_captions_path),
            ("narratives", site.narratives_path),
        ):
            local = folder / Path(path).name
            local.write_bytes(fetcher.fetch(server.url(path)).body)
            paths[name] = local
    finally:
        fetcher.close()
    return paths


def run_demo(args: argparse.Namespace) -> int:
    """Run every stage that exists on the demo web and print where the output went."""
    # Imported here so that `lait --help` does not pay for Beam and the demo web.
    from lait.demo_web import DemoWebServer, build_site
    from lait.demo_web.benchmark import crawled_scenes, write_demo_benchmark
    from pipeline.clip import demo_clip_config
    from pipeline.config import ListSource, OutputConfig, PipelineConfig, SourcesConfig
    from pipeline.fetch import FetchConfig
    from pipeline.run import run_pipeline

    out = Path(args.out)
    started = time.monotonic()
    print(f"building the demo web (seed {args.seed}, {args.images} images) ...", flush=True)
    site = build_site(seed=args.seed, n_images=args.images)
    out.mkdir(parents=True, exist_ok=True)
    site.ground_truth.write_jsonl(out / "ground_truth.jsonl")
    benchmark = write_demo_benchmark(
        out / "benchmark", seed=args.seed, exclude=crawled_scenes(site)
    )

    base = PipelineConfig(
        fetch=FetchConfig(
            allowed_networks=LOOPBACK,
            total_timeout_s=args.timeout,
            retries=1,
            respect_robots_txt=True,
        ),
        # The demo CLIP, its threshold and its content heads (non-natural, watermark) suit
        # the demo web only, so the demo names them.
        clip=demo_clip_config(),
        output=OutputConfig(samples_per_shard=args.samples_per_shard, overwrite=True),
    )
    with DemoWebServer(site) as server:
        print(f"demo web at {server.base_url}", flush=True)
        lists = _fetch_lists(server, site, out / "lists")

        print("\n[1/3] crawling the demo web's pages → web/", flush=True)
        crawl = replace(
            base,
            sources=SourcesConfig(pages=(server.url("/index.html"),), depth=1),
            output=replace(base.output, folder=str(out / "web")),
        )
        web = run_pipeline(crawl, args.beam_args, show_progress=not args.no_progress, job="crawl")

        print("\n[2/3] downloading its Conceptual Captions and SBU lists → cc_sbu/", flush=True)
        download = replace(
            base,
            sources=SourcesConfig(
                lists=(
                    ListSource(path=str(lists["cc"]), format="cc", name="cc"),
                    ListSource(
                        path=str(lists["sbu_urls"]),
                        captions_path=str(lists["sbu_captions"]),
                        format="sbu",
                        name="sbu",
                    ),
                )
            ),
            output=replace(base.output, folder=str(out / "cc_sbu")),
        )
        cc_sbu = run_pipeline(
            download, args.beam_args, show_progress=not args.no_progress, job="download"
        )

    from lait.cli import format_funnel, format_retrieval
    from lait.report import write_report

    reports = {}
    for name, stats in (("web", web), ("cc_sbu", cc_sbu)):
        print(f"\n{name}/\n{format_funnel(stats)}")
        reports[name] = write_report(str(out / name)).html

    trained = None
    if not args.no_pretrain:
        from transformers.utils import logging as transformers_logging

        import pretrain
        from pretrain.trainer import run_plan

        transformers_logging.disable_progress_bar()  # per-checkpoint "Writing model shards"

        print("\n[3/3] two-stage pre-training: web/ then cc_sbu/ → pretrain/", flush=True)
        plan = Path(pretrain.__file__).parent / "plans" / "demo.yaml"
        trained = run_plan(
            plan,
            out_dir=out / "pretrain",
            overrides={"data_root": str(out)},
            resume=False,
            progress=not args.no_progress,
            evaluate_untrained=True,
        )
        print(format_retrieval("\nheld-out, untrained", trained["untrained_eval"]))
        print(format_retrieval("held-out, pre-trained", trained["final_eval"]))
    print(f"\ndone in {time.monotonic() - started:.0f} s. Output in {out}/:")
    print(f"  web/        stage-1 dataset: {web['accepted']} samples in {web['shards']} shards")
    print(
        f"  cc_sbu/     stage-2 dataset: {cc_sbu['accepted']} samples in {cc_sbu['shards']} shards"
    )
    print("  lists/      the demo web's CC and SBU lists and its narratives, as downloaded")
    if trained is not None:
        print(f"  pretrain/   checkpoints; final model: {trained['final']}")
    for name, html in reports.items():
        print(f"  quality report of {name}/: {Path(html).resolve().as_uri()}")
    print("  ground_truth.jsonl   the injected noise, for measuring each stage")
    print(
        "  benchmark/  retrieval benchmark of held-out scenes (train + test splits): "
        f"lait evaluate CKPT --karpathy-json {benchmark} --images {benchmark.parent / 'images'}"
    )
    return 0


def add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `lait demo`."""
    demo = commands.add_parser(
        "demo",
        help="run the whole job on the embedded demo web (offline)",
        description="Start the embedded demo web on 127.0.0.1 and run every LAIT stage on it: "
        "crawl its pages, download its CC/SBU lists, write the dataset folders. Unrecognised "
        "options are Beam pipeline options.",
    )
    demo.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    demo.add_argument("--seed", type=int, default=0, help="demo web seed (default 0)")
    demo.add_argument(
        "--images",
        type=int,
        default=DEMO_IMAGES,
        help=f"images on its pages (default {DEMO_IMAGES})",
    )
    demo.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        help="fetch timeout in seconds (the demo web has a few deliberately slow images)",
    )
    demo.add_argument("--samples-per-shard", type=int, default=200, help="default 200")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.add_argument(
        "--no-pretrain", action="store_true", help="stop after the datasets and their reports"
    )
    demo.set_defaults(run=run_demo, accepts_beam_options=True)
