"""The graph's data flow on real worker processes: one fetch per distinct URL, job-wide
politeness, and the same dataset from `multi_processing` as from `in_memory`."""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from dedupe.keep_best import GROUP_SIZE_METRIC
from lait.dataset import DatasetFolder, check_stats
from lait.demo_web import DemoSite, DemoWebServer, build_site
from lait.record import CaptionSource, Record, Status
from pipeline.clip import DEMO_CLIP_MODEL, ClipConfig
from pipeline.config import ListSource, OutputConfig, PipelineConfig, SourcesConfig
from pipeline.download import Download, DownloadSettings
from pipeline.fetch import FetchConfig
from pipeline.image.config import ImageConfig
from pipeline.run import run_pipeline

IN_MEMORY = ["--direct_running_mode=in_memory"]
TWO_PROCESSES = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


class _CountingServer(ThreadingHTTPServer):
    """Serves /img/N.png (a distinct small PNG per N, after `delay_s`) and /robots.txt; counts
    requests per path and the most requests it ever had in flight at once."""

    daemon_threads = True

    def __init__(self, delay_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _CountingHandler)
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: Counter[str] = Counter()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _CountingHandler(BaseHTTPRequestHandler):
    server: _CountingServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        server = self.server
        with server.lock:
            server.requests[self.path] += 1
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            if self.path == "/robots.txt":
                body, kind = b"User-agent: *\nAllow: /\n", "text/plain"
            else:
                time.sleep(server.delay_s)
                n = int(self.path.rsplit("/", 1)[-1].split(".")[0])
                buffer = io.BytesIO()
                Image.new("RGB", (80, 80), (n * 37 % 256, n * 91 % 256, n * 53 % 256)).save(
                    buffer, "PNG"
                )
                body, kind = buffer.getvalue(), "image/png"
        finally:
            # Counted out before the answer goes: a client finishes reading it (and may send
            # its next request) only afterwards, so the count never exceeds the clients'.
            with server.lock:
                server.in_flight -= 1
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def counting_server() -> Iterator[_CountingServer]:
    server = _CountingServer(delay_s=0.03)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _list_config(folder: Path, list_path: Path, fetch: FetchConfig, threads: int) -> PipelineConfig:
    return PipelineConfig(
        sources=SourcesConfig(lists=(ListSource(path=str(list_path), format="cc"),)),
        fetch=fetch,
        image=ImageConfig(min_side=32, min_bytes=0),
        clip=ClipConfig(enabled=False),
        output=OutputConfig(folder=str(folder), samples_per_shard=50),
        fetch_threads=threads,
    )


def test_each_url_is_fetched_once_and_one_host_never_gets_more_than_its_budget(
    tmp_path: Path, counting_server: _CountingServer
) -> None:
    """60 image URLs, each under 3 captions (one under 40), on one host, fetched by 2 worker
    processes of 4 threads: every URL requested once, robots.txt once (the job's pre-pass,
    though two splits fetch from the host), and never more requests in flight at the host
    than its splits x the fetcher's per-host concurrency."""
    rows = []
    for n in range(60):
        for c in range(40 if n == 0 else 3):
            caption = f"photo number {n} seen from side {c} of the hill"
            rows.append(f"{caption}\t{counting_server.base}/img/{n}.png")
    list_path = tmp_path / "list.tsv"
    list_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    fetch = FetchConfig(
        allowed_networks=("127.0.0.1/32",),
        retries=0,
        respect_robots_txt=True,
        per_domain_concurrency=2,
        max_workers_per_host=2,
    )
    config = _list_config(tmp_path / "ds", list_path, fetch, threads=4)
    stats = run_pipeline(config, TWO_PROCESSES, show_progress=False)
    check_stats(stats)
    assert stats["candidates"] == len(rows)
    images = {path: n for path, n in counting_server.requests.items() if path.startswith("/img/")}
    assert len(images) == 60
    assert set(images.values()) == {1}, images  # one fetch per distinct URL
    assert counting_server.requests["/robots.txt"] == 1
    # Two splits of the host, each fetched by one worker at a time, 2 requests each at most.
    assert counting_server.max_in_flight <= 2 * 2, counting_server.max_in_flight
    # Every caption of a URL got the same image.
    folder = DatasetFolder(tmp_path / "ds")
    table = folder.metadata(["url", "sha256"]).to_pylist()
    rejected = folder.rejects(["url", "sha256", "reject_reason"]).to_pylist()
    by_url: dict[str, set[str]] = {}
    for row in table + [r for r in rejected if r["sha256"]]:
        by_url.setdefault(row["url"], set()).add(row["sha256"])
    assert all(len(hashes) == 1 for hashes in by_url.values())
    assert len(table) + len(rejected) == len(rows)  # nothing lost, nothing twice


@pytest.fixture(scope="module")
def small_site() -> DemoSite:
    return build_site(seed=11, n_images=60, slow_delay_s=1.5)


def _crawl_config(folder: Path, server: DemoWebServer) -> PipelineConfig:
    return PipelineConfig(
        sources=SourcesConfig(pages=(server.index_url,), depth=1),
        fetch=FetchConfig(
            allowed_networks=("127.0.0.1/32",),
            total_timeout_s=0.8,
            retries=0,
            respect_robots_txt=True,
        ),
        clip=ClipConfig(model=DEMO_CLIP_MODEL),
        output=OutputConfig(folder=str(folder), samples_per_shard=40),
    )


def _outcome_by_key(folder: DatasetFolder) -> dict[tuple[str, str], str]:
    out = {
        (r["key"], r["sighting_id"]): "accepted"
        for r in folder.metadata(["key", "sighting_id"]).to_pylist()
    }
    for row in folder.rejects(["key", "sighting_id", "reject_reason"]).to_pylist():
        out[(row["key"], row["sighting_id"])] = row["reject_reason"]
    return out


def test_demo_crawl_on_two_worker_processes_matches_in_memory(
    tmp_path: Path, small_site: DemoSite
) -> None:
    with DemoWebServer(small_site) as server:
        single = run_pipeline(
            _crawl_config(tmp_path / "one", server), IN_MEMORY, show_progress=False
        )
        before = server.paths_requested()
        multi = run_pipeline(
            _crawl_config(tmp_path / "two", server), TWO_PROCESSES, show_progress=False
        )
        after = server.paths_requested()
    check_stats(multi)
    assert multi["funnel"] == single["funnel"]
    assert multi["by_source"] == single["by_source"]
    one, two = DatasetFolder(tmp_path / "one"), DatasetFolder(tmp_path / "two")
    assert _outcome_by_key(two) == _outcome_by_key(one)
    # Each image URL the crawl met was requested once per run, on either runner.
    urls = {r["url"] for r in one.metadata(["url"]).to_pylist()}
    urls |= {r["url"] for r in one.rejects(["url", "num_bytes"]).to_pylist() if r["num_bytes"]}
    paths = {u.removeprefix(server.base_url) for u in urls if u.startswith(server.base_url)}
    assert paths
    assert all(before[p] == 1 for p in paths), {p: before[p] for p in paths if before[p] != 1}
    assert all(after[p] - before[p] == 1 for p in paths)


def test_a_hot_url_is_fetched_once_and_joined_in_bounded_groups(
    tmp_path: Path, counting_server: _CountingServer
) -> None:
    """One image URL under 5,000 captions (hot cap 500): one request, every caption gets the
    image's hash and staging reference, and no join group holds more than ~500 captions."""
    url = f"{counting_server.base}/img/7.png"
    records = [
        Record.candidate(
            source="list",
            url=url,
            caption=f"caption {i}",
            caption_source=CaptionSource.LIST,
            where=f"list.tsv:{i}",
        )
        for i in range(5000)
    ]
    fetch = FetchConfig(allowed_networks=("127.0.0.1/32",), retries=0)
    staging = str(tmp_path / "staging")
    pipeline = beam.Pipeline()
    out = (
        pipeline
        | beam.Create(records)
        | Download(
            DownloadSettings(fetch, ImageConfig(min_side=32, min_bytes=0), 4, staging),
            hot_cap=500,
        )
    )
    outcomes = out | "Outcome" >> beam.Map(lambda r: f"{r.status.value} {r.sha256 is not None}")
    assert_that(
        outcomes | "Outcomes" >> beam.Distinct(),
        equal_to([f"{Status.CANDIDATE.value} True"]),
        label="AllGotTheImage",
    )
    refs = out | "Ref" >> beam.Map(lambda r: r.image_ref or "") | "Refs" >> beam.Distinct()
    assert_that(
        refs | "CountRefs" >> beam.combiners.Count.Globally(), equal_to([1]), label="OneRef"
    )
    assert_that(
        out | "CountAll" >> beam.combiners.Count.Globally(),
        equal_to([len(records)]),
        label="NothingLost",
    )
    result = pipeline.run()
    result.wait_until_finish()
    assert counting_server.requests[urlsplit(url).path] == 1
    sizes = result.metrics().query(MetricsFilter().with_name(GROUP_SIZE_METRIC))["distributions"]
    assert max(d.committed.max for d in sizes) <= 600
