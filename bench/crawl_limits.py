"""A hostile page: one slow loopback host serving one page of 20,000 images, 40 ms per request.

The default crawl (every default but the loopback allowance and the demo CLIP, as the demo
runs) must finish in bounded time and memory: the per-page cap (`fetch.max_images_per_page`,
1,000) takes the page's first images and ledgers the rest as `over_page_cap`, the host's
adaptive concurrency grows while it answers fast, and nothing holds a whole page's
candidates in one element. The job runs in a child process; its peak RSS is sampled over
the whole process tree (`/proc`, every 0.1 s, children included), and the written folder
is checked: accepted + rejected = the page's candidates, the pages ledger's row says how
many were capped.

    .venv/bin/python bench/crawl_limits.py [--images 20000] [--delay-ms 40] [--cap N]
    .venv/bin/python bench/crawl_limits.py --smoke     # 600 images, cap 100: seconds

Prints the figures, then one JSON line: {"seconds": S, "peak_rss_mb": M, "accounted": true,
"candidates": ..., "over_page_cap": ..., "image_requests": ..., "max_in_flight": ...}.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

ROOT = Path(__file__).resolve().parent.parent
DEMO_PAIRS = 200  # clean demo-web (image, caption) pairs, served under the page's URLs in turn


def demo_pairs(count: int = DEMO_PAIRS) -> list[tuple[str, bytes]]:
    """(caption, image bytes) of clean demo-web pictures (`lait.demo_web`): the demo CLIP
    accepts many of them, so the crawl writes shards as a real one does."""
    from lait.demo_web import build_site

    site = build_site(seed=11, n_images=2 * count, noise_rate=0.0, n_slow=0)
    pairs = []
    for ref in site.ground_truth.references:
        clean = {kind.value for kind in ref.noise} == {"clean"}
        if ref.source != "page" or not clean or ref.scene is None or ref.status != 200:
            continue
        if ref.content_type != "image/jpeg" or ref.caption != ref.true_caption:
            continue
        pairs.append((ref.caption, site.body(ref.url, "http://demo.invalid")))
        if len(pairs) == count:
            break
    return pairs


def _page(images: int, captions: list[str]) -> bytes:
    # Each image's caption is its picture's, numbered: a caption on many images is a text
    # filter's reject (caption_shared_too_often), which would hide the fetch stages.
    imgs = "".join(
        f'<figure><img src="/img/{n}.jpg" alt="{html.escape(captions[n % len(captions)])}, '
        f'photo {n}"></figure>'
        for n in range(images)
    )
    return f"<!doctype html><html><body><h1>gallery</h1>{imgs}</body></html>".encode()


class HostileHost(ThreadingHTTPServer):
    """One page of `images` images; every answer after `delay_s`; counts what it served."""

    daemon_threads = True

    def __init__(self, images: int, delay_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        pairs = demo_pairs()
        self.page = _page(images, [caption for caption, _ in pairs])
        self.images = [image for _, image in pairs]
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.image_requests = 0
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/gallery.html"


class _Handler(BaseHTTPRequestHandler):
    server: HostileHost

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        host = self.server
        with host.lock:
            host.in_flight += 1
            host.max_in_flight = max(host.max_in_flight, host.in_flight)
        try:
            time.sleep(host.delay_s)
            if self.path == "/gallery.html":
                status, kind, body = 200, "text/html; charset=utf-8", host.page
            elif self.path.startswith("/img/"):
                n = int(self.path.rsplit("/", 1)[1].split(".")[0])
                status, kind, body = 200, "image/jpeg", host.images[n % len(host.images)]
                with host.lock:
                    host.image_requests += 1
            else:
                status, kind, body = 404, "text/plain", b"none"
        finally:
            with host.lock:
                host.in_flight -= 1
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of `pid` and all its descendants (Linux /proc), in MiB."""
    total_kb = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    todo.extend(int(c) for c in children.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total_kb / 1024


def run_crawl(page_url: str, out: Path, cap: int | None) -> dict[str, object]:
    """The child: the default crawl of `page_url` into `out`; its stats."""
    from pipeline.clip import DEMO_CLIP_MODEL
    from pipeline.config import load_config
    from pipeline.run import run_pipeline

    overrides: dict[str, object] = {
        "sources.pages": [page_url],
        "fetch.allowed_networks": ["127.0.0.1/32"],
        "clip.model": DEMO_CLIP_MODEL,
        "output.folder": str(out),
    }
    if cap is not None:
        overrides["fetch.max_images_per_page"] = cap
    config = load_config(None, overrides)
    stats: dict[str, object] = run_pipeline(
        config, ["--direct_running_mode=in_memory"], show_progress=False
    )
    return stats


def check_folder(folder: Path) -> dict[str, int]:
    """Counts read back from the written folder (shards, rejects ledger, pages ledger)."""
    import duckdb

    shards = sorted(folder.glob("[0-9]*.parquet"))
    accepted = (
        duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/*.parquet')").fetchone()
        if shards
        else (0,)
    )
    rejected = duckdb.sql(
        f"SELECT count(*), count(*) FILTER (WHERE reject_reason = 'over_page_cap') "
        f"FROM read_parquet('{folder}/rejects/*.parquet')"
    ).fetchone()
    page = duckdb.sql(
        f"SELECT candidates, over_page_cap FROM read_parquet('{folder}/pages/*.parquet')"
    ).fetchall()
    assert accepted is not None and rejected is not None and len(page) == 1
    reasons = duckdb.sql(
        f"SELECT reject_reason, count(*) FROM read_parquet('{folder}/rejects/*.parquet') "
        "GROUP BY 1 ORDER BY 2 DESC"
    ).fetchall()
    print("  rejects by reason    " + ", ".join(f"{r} {n}" for r, n in reasons))
    return {
        "accepted": int(accepted[0]),
        "rejected": int(rejected[0]),
        "over_page_cap_rejects": int(rejected[1]),
        "page_candidates": int(page[0][0]),
        "page_over_page_cap": int(page[0][1]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--images", type=int, default=20_000, help="images on the page")
    parser.add_argument("--delay-ms", type=float, default=40.0, help="each answer's delay")
    parser.add_argument("--cap", type=int, help="fetch.max_images_per_page (default: 1,000)")
    parser.add_argument("--smoke", action="store_true", help="600 images, cap 100: seconds")
    parser.add_argument("--child", nargs=2, metavar=("PAGE_URL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        cap = None if args.cap is None else args.cap
        print(json.dumps(run_crawl(args.child[0], Path(args.child[1]), cap), default=str)[:200])
        return
    if args.smoke:
        args.images, args.cap = 600, 100
    host = HostileHost(args.images, args.delay_ms / 1000)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="lait-crawl-limits-") as tmp:
        out = Path(tmp) / "dataset"
        command = [sys.executable, str(Path(__file__).resolve()), "--child", host.url, str(out)]
        if args.cap is not None:
            command += ["--cap", str(args.cap)]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        started = time.monotonic()
        log = Path(tmp) / "child.log"  # a file, not a pipe: a full pipe would stall the child
        with log.open("w") as child_out:
            child = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=child_out, stderr=subprocess.STDOUT
            )
        peak = 0.0
        while child.poll() is None:
            peak = max(peak, _tree_rss_mb(child.pid))
            time.sleep(0.1)
        seconds = time.monotonic() - started
        output = log.read_text(errors="replace")
        if child.returncode != 0:
            raise SystemExit(f"the crawl failed (exit {child.returncode}): {output[-2000:]}")
        counts = check_folder(out)
    host.shutdown()
    cap = args.cap if args.cap is not None else 1000
    candidates = counts["page_candidates"]
    accounted = counts["accepted"] + counts["rejected"] == candidates == args.images and counts[
        "over_page_cap_rejects"
    ] == counts["page_over_page_cap"] == max(0, args.images - cap)
    print(f"page of {args.images} images, {args.delay_ms:.0f} ms per answer, cap {cap}")
    print(f"  wall time            {seconds:8.1f} s (child process: start, graph, crawl, write)")
    print(f"  peak RSS (tree)      {peak:8.0f} MiB")
    print(f"  image requests       {host.image_requests:8d} (max {host.max_in_flight} in flight)")
    print(
        f"  accepted + rejected  {counts['accepted']} + {counts['rejected']} = "
        f"{counts['accepted'] + counts['rejected']} (the page gave {candidates})"
    )
    print(f"  over_page_cap        {counts['over_page_cap_rejects']:8d} ledgered")
    print(
        json.dumps(
            {
                "seconds": round(seconds, 1),
                "peak_rss_mb": round(peak),
                "accounted": accounted,
                "candidates": candidates,
                "accepted": counts["accepted"],
                "over_page_cap": counts["over_page_cap_rejects"],
                "image_requests": host.image_requests,
                "max_in_flight": host.max_in_flight,
                "images": args.images,
                "delay_ms": args.delay_ms,
                "cap": cap,
                "smoke": args.smoke,
            }
        )
    )


if __name__ == "__main__":
    main()
