"""Download + resize throughput: LAIT vs img2dataset's `download()`, and the whole curated graph.

Both fetch the same URL list from the same loopback image server (a process of its own, so
serving costs neither side's interpreter lock), resize to the same size and mode, and write
WebDataset shards. img2dataset runs `--processes` processes of `--threads`
threads; LAIT runs `--threads` fetch threads per worker on Beam's local runner, in `--mode`
(`in_memory`, the CLI's default, is one process whatever `--processes` says: Beam ignores
`direct_num_workers` there; `multi_processing` starts `--processes` workers). Three runs,
each side's best of `--repeat`, interleaved:

- img2dataset: `download()`, the named peer (images written per second of wall time);
- ours, download + resize: the LAIT graph with its own stage switches set to what
  img2dataset does (text filters, language filter, CLIP and every dedupe stage off; see
  `download_and_resize_only`), so every image is written;
- ours, curated: the whole graph as a real crawl runs it (text filters, language ID, the
  demo CLIP scoring and its threshold, best caption per image, dedupe). It rejects most of
  the bench's images (noise does not match its caption; 200 distinct images are served under
  all URLs), so its rate is candidates per second: each candidate ends accepted or rejected,
  after the same fetch and resize.

    .venv/bin/python bench/download.py [--images 2000] [--processes 2] [--threads 16]
    .venv/bin/python bench/download.py --smoke        # a few dozen images, seconds

The last line is one JSON object: {"ratio": download+resize / img2dataset,
"pipeline_ratio": curated graph / img2dataset, "ours_per_s": ..., "pipeline_per_s": ...,
"peer_per_s": ...}.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
from PIL import Image

DISTINCT_IMAGES = 200  # served under many URLs each; decoding cost is per request anyway


def _images(count: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        width, height = int(rng.integers(480, 800)), int(rng.integers(360, 600))
        base = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
        del i
    return out


def _serve(images: list[bytes], ports: Any) -> None:
    """Serve /img/N.jpg (N any integer) from `images` on 127.0.0.1 until killed; the port goes
    to `ports`. Runs in its own process (see `_ImageServer`)."""
    bodies = images

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            try:
                number = int(self.path.rsplit("/", 1)[-1].split(".")[0])
            except ValueError:
                self.send_error(404)
                return
            body = bodies[number % len(bodies)]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

        def handle_error(self, request: object, client_address: object) -> None:
            return

    httpd = Server(("127.0.0.1", 0), Handler)
    ports.put(httpd.server_address[1])
    httpd.serve_forever()


class _ImageServer:
    """The loopback image server both sides fetch from, in a process of its own: in a thread of
    the bench's process it would share one interpreter lock with the in-memory Beam runner
    (and not with img2dataset's worker processes), so serving would be charged to one side."""

    def __init__(self, images: list[bytes]) -> None:
        context = multiprocessing.get_context("spawn")
        ports = context.Queue()
        self.process = context.Process(target=_serve, args=(images, ports), daemon=True)
        self.process.start()
        self.port: int = ports.get(timeout=60)

    def close(self) -> None:
        self.process.terminate()
        self.process.join(timeout=10)


def _write_lists(folder: Path, port: int, count: int) -> tuple[Path, Path]:
    urls = [
        (f"http://127.0.0.1:{port}/img/{i}.jpg", f"a test image number {i}") for i in range(count)
    ]
    tsv = folder / "cc.tsv"
    tsv.write_text("".join(f"{caption}\t{url}\n" for url, caption in urls))
    table = folder / "urls.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "caption"])
        writer.writerows(urls)
    return tsv, table


def download_and_resize_only(config: Any) -> Any:
    """`config` with the graph's stage switches set to img2dataset's job: fetch, decode, resize,
    write. Text, language and CLIP filters and every dedupe stage are off (`unfiltered`), and
    CLIP does not score at all (img2dataset has no model)."""
    from pipeline.config import unfiltered

    raw = unfiltered(config)
    return dataclasses.replace(raw, clip=dataclasses.replace(raw.clip, enabled=False))


def run_ours(
    tsv: Path,
    out: Path,
    processes: int,
    threads: int,
    size: int,
    mode: str = "in_memory",
    *,
    curated: bool,
) -> dict[str, Any]:
    """Run the LAIT graph on the list through `pipeline.run.run_pipeline`; return its stats."""
    from pipeline.clip import DEMO_CLIP_MODEL, ClipConfig
    from pipeline.config import ImageConfig, ListSource, OutputConfig, PipelineConfig, SourcesConfig
    from pipeline.fetch import FetchConfig
    from pipeline.run import run_pipeline

    config = PipelineConfig(
        sources=SourcesConfig(lists=(ListSource(path=str(tsv), format="cc"),)),
        fetch=FetchConfig(
            allowed_networks=("127.0.0.1/32",),
            per_domain_concurrency=threads,
            retries=0,
        ),
        image=ImageConfig(image_size=size, resize_mode="keep_ratio", min_side=0),
        clip=ClipConfig(model=DEMO_CLIP_MODEL),
        output=OutputConfig(folder=str(out), samples_per_shard=1000, overwrite=True),
        fetch_threads=threads,
    )
    if not curated:
        config = download_and_resize_only(config)
    stats: dict[str, Any] = run_pipeline(
        config,
        [f"--direct_num_workers={processes}", f"--direct_running_mode={mode}"],
        show_progress=False,
    )
    return stats


def run_img2dataset(table: Path, out: Path, processes: int, threads: int, size: int) -> int:
    from img2dataset import download

    download(
        url_list=str(table),
        input_format="csv",
        url_col="url",
        caption_col="caption",
        output_folder=str(out),
        output_format="webdataset",
        processes_count=processes,
        thread_count=threads,
        image_size=size,
        resize_mode="keep_ratio",
        resize_only_if_bigger=True,
        number_sample_per_shard=1000,
        disallowed_header_directives=["noai", "noimageai", "noindex", "noimageindex"],
        timeout=15,
        retries=0,
        enable_wandb=False,
    )
    written = 0
    for stats_file in out.glob("*_stats.json"):
        written += json.loads(stats_file.read_text())["successes"]
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--mode",
        default="in_memory",
        choices=["in_memory", "multi_threading", "multi_processing"],
        help="Beam's local running mode for the LAIT side (the CLI's default is in_memory)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="40 images, 1 process, 4 threads, one repeat"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.processes, args.threads, args.repeat = 40, 1, 4, 1

    server = _ImageServer(_images(DISTINCT_IMAGES if not args.smoke else 8))
    work = Path(tempfile.mkdtemp(prefix="lait-bench-download-"))
    runs = ("img2dataset", "ours", "curated")
    try:
        tsv, table = _write_lists(work, server.port, args.images)
        results: dict[str, list[float]] = {name: [] for name in runs}
        curated_stats: dict[str, Any] = {}
        for attempt in range(args.repeat):
            for name in runs:
                out = work / f"{name}-{attempt}"
                started = time.perf_counter()
                if name == "img2dataset":
                    done = run_img2dataset(table, out, args.processes, args.threads, args.size)
                    what = "images written"
                else:
                    stats = run_ours(
                        tsv,
                        out,
                        args.processes,
                        args.threads,
                        args.size,
                        args.mode,
                        curated=name == "curated",
                    )
                    if stats["accepted"] + stats["rejected"] != stats["candidates"]:
                        raise SystemExit(f"{name}: accepted + rejected != candidates: {stats}")
                    if name == "ours":
                        done, what = stats["accepted"], "images written"
                    else:
                        done, what = stats["candidates"], "candidates decided"
                        curated_stats = stats
                seconds = time.perf_counter() - started
                if done != args.images:
                    raise SystemExit(f"{name}: {done} {what} of {args.images} images")
                results[name].append(done / seconds)
                print(
                    f"{name:12s} run {attempt}: {done} {what} in {seconds:.1f} s "
                    f"= {done / seconds:.0f}/s",
                    flush=True,
                )
                shutil.rmtree(out, ignore_errors=True)
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)

    ours, curated, peer = (max(results[name]) for name in ("ours", "curated", "img2dataset"))
    print(
        f"download + resize: LAIT {ours:.0f} images/s vs img2dataset {peer:.0f} images/s: "
        f"ratio {ours / peer:.2f} (goal >= 1.5)"
    )
    print(
        f"whole curated graph: {curated:.0f} candidates/s vs img2dataset's download: "
        f"pipeline_ratio {curated / peer:.2f} (goal >= 0.8)"
    )
    print(
        json.dumps(
            {
                "ratio": round(ours / peer, 3),
                "pipeline_ratio": round(curated / peer, 3),
                "ours_per_s": round(ours, 1),
                "pipeline_per_s": round(curated, 1),
                "peer_per_s": round(peer, 1),
                "curated_accepted": curated_stats.get("accepted"),
                "images": args.images,
                "processes": args.processes,
                "threads": args.threads,
                "mode": args.mode,
                "smoke": args.smoke,
            }
        )
    )


if __name__ == "__main__":
    main()
