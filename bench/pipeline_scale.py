"""What scale costs in the pipeline's data flow: fetches per URL, bytes shuffled, memory.

A generated url+caption list with the web's repetition — each image URL under ~3 captions,
a few hot URLs under thousands of captions, a few boilerplate captions on thousands of
rows, images spread over several hosts (loopback servers on their own ports) — goes through
the whole graph (text filters, fastText language ID, fetch + resize, every dedupe stage;
CLIP off, since this measures data flow, not the model). The same input runs through the
graph as it stood before the data-flow change (`--old-ref`, a git commit checked out in a
temporary worktree), each flow in its own process, one after the other.

Figures per flow:
- fetches per distinct URL: image requests the servers counted / distinct image URLs they
  were asked for (URLs whose every caption the text filters drop are never fetched);
- shuffled bytes per stored image byte: the bytes of every element entering a GroupByKey
  (Reshuffle and combiners included), from the runner's own per-PCollection element counts
  and sampled element sizes, over the image bytes the shards hold;
- peak RSS of the job's process; candidates per second.

    .venv/bin/python bench/pipeline_scale.py [--candidates 100000] [--old-ref 1361339]
    .venv/bin/python bench/pipeline_scale.py --smoke      # a couple of thousand, seconds

The last line is one JSON object: {"fetches_per_distinct_url": F, "shuffled_over_stored_bytes":
S, "peak_rss_mb": M, "new_over_old_throughput": R, "old": {...}, "new": {...}}.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

OLD_REF = "1361339"  # main before one-fetch-per-URL, staged bytes and salted joins
HOSTS = 4
GBK_URN = "beam:transform:group_by_key:v1"
ELEMENT_COUNT_URN = "beam:metric:element_count:v1"
SAMPLED_SIZE_URN = "beam:metric:sampled_byte_size:v1"
WORDS = [
    *("red", "blue", "green", "old", "small", "large", "quiet", "busy", "river", "mountain"),
    *("street", "market", "garden", "harbour", "bridge", "tower", "field", "forest", "beach"),
    *("window", "door", "table", "chair", "lamp", "bicycle", "train", "station"),
]


# ---------------------------------------------------------------- the input and its servers


def _image(n: int) -> bytes:
    """A distinct photo-sized JPEG per n (320x240, ~20 KB: web images are tens of KB, and the
    ratio of shuffled to stored bytes depends on it)."""
    from PIL import Image

    rng = random.Random(n)
    small = Image.frombytes("RGB", (40, 30), rng.randbytes(40 * 30 * 3))
    image = small.resize((320, 240), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class _ImageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ImageHandler)
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ImageHandler(BaseHTTPRequestHandler):
    server: _ImageServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        server = self.server
        with server.lock:
            server.requests[self.path] += 1
        if self.path == "/robots.txt":
            body, kind = b"User-agent: *\nAllow: /\n", "text/plain"
        else:
            body, kind = _image(int(self.path.rsplit("/", 1)[-1].split(".")[0])), "image/jpeg"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _caption(rng: random.Random, n: int) -> str:
    return f"{' '.join(rng.choice(WORDS) for _ in range(5))} number {n}"


def write_list(path: Path, bases: list[str], candidates: int, seed: int = 0) -> dict[str, int]:
    """A CC-format list of `candidates` rows; returns what it holds."""
    rng = random.Random(seed)
    hot_urls, hot_captions = 3, 3
    hot_rows = max(20, candidates // 50)  # each hot URL / caption on ~2% of the rows
    plain = candidates - (hot_urls + hot_captions) * hot_rows
    distinct = max(1, plain // 3)  # each image URL under ~3 captions
    rows = []
    for i in range(plain):
        n = rng.randrange(distinct)
        rows.append((_caption(rng, i), f"{bases[n % len(bases)]}/img/{n}.jpg"))
    for h in range(hot_urls):  # a logo: one URL under thousands of alts
        n = distinct + h
        rows += [(_caption(rng, 10**9 + i), f"{bases[0]}/img/{n}.jpg") for i in range(hot_rows)]
    for h in range(hot_captions):  # boilerplate: one caption on thousands of images
        text = f"click here to see the full picture {h}"
        for i in range(hot_rows):
            n = distinct + hot_urls + h * hot_rows + i
            rows.append((text, f"{bases[n % len(bases)]}/img/{n}.jpg"))
    rng.shuffle(rows)
    path.write_text("".join(f"{c}\t{u}\n" for c, u in rows), encoding="utf-8")
    return {"rows": len(rows), "distinct_urls": len({u for _, u in rows})}


# ---------------------------------------------------------------- one flow, in its own process


def _config(list_path: str, out: str) -> Any:
    from pipeline.clip import ClipConfig
    from pipeline.config import ListSource, OutputConfig, PipelineConfig, SourcesConfig
    from pipeline.fetch import FetchConfig
    from pipeline.image.config import ImageConfig

    return PipelineConfig(
        sources=SourcesConfig(lists=(ListSource(path=list_path, format="cc"),)),
        fetch=FetchConfig(allowed_networks=("127.0.0.1/32",), retries=0),
        image=ImageConfig(min_side=32, min_bytes=0),
        clip=ClipConfig(enabled=False),
        output=OutputConfig(folder=out, samples_per_shard=2000),
    )


def _gbk_inputs(pipeline: Any) -> dict[str, str]:
    """The PCollections entering a GroupByKey, each with that GroupByKey's name."""
    proto = pipeline.to_runner_api()
    return {
        pcoll: transform.unique_name
        for transform in proto.components.transforms.values()
        if transform.spec.urn == GBK_URN
        for pcoll in transform.inputs.values()
    }


def _shuffled_bytes_by_input(result: Any, gbk_inputs: dict[str, str]) -> dict[str, int]:
    """Bytes entering each GroupByKey (element count x mean sampled size), by its name."""
    from apache_beam.metrics import monitoring_infos

    counts: dict[str, int] = {}
    sampled: dict[str, tuple[float, int]] = {}  # sampled bytes and samples, over every stage
    for info in result.monitoring_infos():
        pcoll = info.labels.get("PCOLLECTION")
        if pcoll not in gbk_inputs:
            continue
        value: Any = monitoring_infos.extract_metric_result_map_value(info)
        if info.urn == ELEMENT_COUNT_URN:
            counts[pcoll] = counts.get(pcoll, 0) + int(value)
        elif info.urn == SAMPLED_SIZE_URN and value.count:
            total, samples = sampled.get(pcoll, (0.0, 0))
            sampled[pcoll] = (total + value.sum, samples + value.count)
    means = {pcoll: total / samples for pcoll, (total, samples) in sampled.items()}
    if gbk_inputs and not counts:
        raise RuntimeError("the runner reported no element counts for the GroupByKey inputs")
    by_name: dict[str, int] = {}
    for pcoll, count in counts.items():
        name = gbk_inputs[pcoll]
        by_name[name] = by_name.get(name, 0) + round(count * means.get(pcoll, 0.0))
    return by_name


def _stored_image_bytes(folder: Path) -> int:
    total = 0
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            total += sum(m.size for m in tar if m.name.endswith((".jpg", ".png", ".webp")))
    return total


def run_flow(list_path: str, out: str) -> dict[str, Any]:
    """Run the graph importable from here (new or old) over the list; its figures."""
    import apache_beam as beam

    from lait.dataset import DatasetFolder, finalize, prepare_folder
    from pipeline.beam_options import local_runner, pipeline_options
    from pipeline.graph import BuildDataset

    config = _config(list_path, out)
    options, _ = pipeline_options(["--direct_running_mode=in_memory"])
    prepare_folder(out, overwrite=False)
    started = time.perf_counter()
    pipeline = beam.Pipeline(runner=local_runner(), options=options)
    _ = pipeline | "LAIT" >> BuildDataset(config, None)
    gbk_inputs = _gbk_inputs(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - started
    try:  # the new flow writes its stats in the job; the old one needs finalize
        from pipeline.staging import remove_staging

        remove_staging(out)
        stats = DatasetFolder(out).stats()
    except ImportError:
        stats = finalize(out)
    stored = _stored_image_bytes(Path(out))
    by_input = _shuffled_bytes_by_input(result, gbk_inputs)
    shuffled = sum(by_input.values())
    largest = sorted(by_input.items(), key=lambda kv: -kv[1])[:8]
    return {
        "seconds": round(seconds, 2),
        "candidates": stats["candidates"],
        "accepted": stats["accepted"],
        "candidates_per_s": round(stats["candidates"] / seconds, 1),
        "stored_image_bytes": stored,
        "shuffled_bytes": shuffled,
        "shuffled_over_stored_bytes": round(shuffled / max(1, stored), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "reasons": stats["reasons"],
        # Where the shuffled bytes go: the largest GroupByKey inputs, bytes per stored byte.
        "largest_shuffles": {name: round(size / max(1, stored), 3) for name, size in largest},
    }


def _child(code_root: Path, list_path: Path, out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code_root), "NO_ALBUMENTATIONS_UPDATE": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), "--flow", str(list_path), str(out)]
    done = subprocess.run(
        command, cwd=code_root, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"flow in {code_root} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def _old_worktree(ref: str, into: Path) -> Path | None:
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "--detach", str(into), ref],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        print(f"old flow skipped: cannot check out {ref}: {done.stderr.strip()}")
        return None
    return into


def _remove_worktree(path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    subprocess.run(
        ["git", "-C", str(repo), "worktree", "remove", "--force", str(path)],
        capture_output=True,
        check=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--old-ref", default=OLD_REF, help="the commit of the old flow ('' skips)")
    parser.add_argument("--smoke", action="store_true", help="2,000 candidates, no old flow")
    parser.add_argument("--flow", nargs=2, metavar=("LIST", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flow:
        print(json.dumps(run_flow(*args.flow)))
        return
    candidates = 2_000 if args.smoke else args.candidates
    old_ref = "" if args.smoke else args.old_ref

    servers = [_ImageServer() for _ in range(HOSTS)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    new_root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="lait-scale-") as tmp:
        tmp_path = Path(tmp)
        held = write_list(tmp_path / "list.tsv", [s.base for s in servers], candidates)
        print(f"{held['rows']:,} candidates, {held['distinct_urls']:,} distinct image URLs")
        flows: dict[str, dict[str, Any]] = {}
        roots = {"new": new_root}
        if old_ref:
            old = _old_worktree(old_ref, tmp_path / "old-code")
            if old is not None:
                roots = {"old": old, "new": new_root}
        try:
            for name, root in roots.items():
                for server in servers:
                    server.requests.clear()
                figures = _child(root, tmp_path / "list.tsv", tmp_path / f"out-{name}")
                # Per URL that reached the download (text and language filters drop some first).
                fetched = Counter(
                    {p: n for s in servers for p, n in s.requests.items() if p.startswith("/img/")}
                )
                figures["fetches_per_distinct_url"] = round(
                    sum(fetched.values()) / max(1, len(fetched)), 3
                )
                figures["most_fetches_of_one_url"] = max(fetched.values(), default=0)
                flows[name] = figures
                print(
                    f"{name}: {figures['candidates_per_s']:,} candidates/s, "
                    f"{figures['fetches_per_distinct_url']} fetches per URL, "
                    f"shuffled/stored bytes {figures['shuffled_over_stored_bytes']}, "
                    f"peak RSS {figures['peak_rss_mb']} MB, "
                    f"{figures['accepted']:,} accepted"
                )
                for shuffle, ratio in figures.get("largest_shuffles", {}).items():
                    print(f"    {ratio:6.3f} of stored bytes into {shuffle}")
        finally:
            if "old" in roots:
                _remove_worktree(roots["old"])
    for server in servers:
        server.shutdown()
    new = flows["new"]
    summary: dict[str, Any] = {
        "candidates": held["rows"],
        "distinct_urls": held["distinct_urls"],
        "fetches_per_distinct_url": new["fetches_per_distinct_url"],
        "shuffled_over_stored_bytes": new["shuffled_over_stored_bytes"],
        "peak_rss_mb": new["peak_rss_mb"],
        "new_over_old_throughput": (
            round(new["candidates_per_s"] / flows["old"]["candidates_per_s"], 3)
            if "old" in flows
            else None
        ),
        **{name: {k: v for k, v in f.items() if k != "reasons"} for name, f in flows.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
