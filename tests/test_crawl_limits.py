"""Each host's job-wide budget through the whole job: the fetch budget takes the same URLs on
every run and requests no more; the time budget stops a slow host; nothing is lost."""

from __future__ import annotations

import dataclasses
import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from lait.dataset import DatasetFolder, check_stats
from pipeline.clip import ClipConfig
from pipeline.config import ListSource, OutputConfig, PipelineConfig, SourcesConfig
from pipeline.fetch import FetchConfig
from pipeline.host_budget import SplitClock, url_rank
from pipeline.image.config import ImageConfig
from pipeline.run import run_pipeline

IN_MEMORY = ["--direct_running_mode=in_memory"]


class _ImageServer(ThreadingHTTPServer):
    """/img/N.png: a distinct 64x64 PNG per N, after `delay_s`; counts requests per path."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ImageHandler)
        self.delay_s = 0.0
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ImageHandler(BaseHTTPRequestHandler):
    server: _ImageServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests[self.path] += 1
        time.sleep(self.server.delay_s)
        n = int(self.path.rsplit("/", 1)[1].split(".")[0]) if self.path.startswith("/img/") else 0
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (n * 37 % 256, n * 91 % 256, n * 53 % 256)).save(buffer, "PNG")
        body = buffer.getvalue()
        self.send_response(200 if self.path.startswith("/img/") else 404)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def server() -> Iterator[_ImageServer]:
    httpd = _ImageServer()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _run(tmp: Path, name: str, urls: list[str], threads: int = 4, **fetch: object) -> DatasetFolder:
    rows = [f"photo number {i} of a red barn by the river\t{url}" for i, url in enumerate(urls)]
    list_path = tmp / f"{name}.tsv"
    list_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = PipelineConfig(
        sources=SourcesConfig(lists=(ListSource(path=str(list_path), format="cc"),)),
        fetch=FetchConfig(allowed_networks=("127.0.0.1/32",), retries=0, **fetch),  # type: ignore[arg-type]
        image=ImageConfig(min_side=32),
        clip=ClipConfig(enabled=False),
        output=OutputConfig(folder=str(tmp / name)),
        fetch_threads=threads,
    )
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, enabled=False))
    stats = run_pipeline(config, IN_MEMORY, show_progress=False)
    check_stats(stats)
    assert stats["candidates"] == len(urls) == stats["accepted"] + stats["rejected"]
    return DatasetFolder(tmp / name)


def _over_budget(folder: DatasetFolder) -> set[str]:
    return {
        r["url"]
        for r in folder.rejects(["url", "reject_reason"]).to_pylist()
        if r["reject_reason"] == "over_host_budget"
    }


def test_the_fetch_budget_takes_the_same_urls_every_run(
    server: _ImageServer, tmp_path: Path
) -> None:
    urls = [f"{server.base}/img/{n}.png" for n in range(30)]
    first = _run(tmp_path, "first", urls, max_fetches_per_host=10)
    fetched = {path for path, n in server.requests.items() if path.startswith("/img/")}
    assert len(fetched) == 10 and set(server.requests.values()) == {1}
    expected = {u for u in sorted(urls, key=url_rank)[:10]}
    assert {server.base + path for path in fetched} == expected
    assert _over_budget(first) == set(urls) - expected
    server.requests.clear()
    second = _run(tmp_path, "second", urls, max_fetches_per_host=10)
    assert _over_budget(second) == _over_budget(first)
    assert {server.base + p for p in server.requests if p.startswith("/img/")} == expected
    detail = second.rejects(["reject_detail", "reject_limit"]).to_pylist()[0]
    assert "max_fetches_per_host=10" in detail["reject_detail"] and detail["reject_limit"] == 10


def test_the_time_budget_stops_a_slow_host(server: _ImageServer, tmp_path: Path) -> None:
    server.delay_s = 0.2
    urls = [f"{server.base}/img/{n}.png" for n in range(40)]
    # One split, 2 threads: batches of 8 URLs, ~0.8 s each; the budget (1 s) lets 2 start.
    folder = _run(
        tmp_path, "slow", urls, threads=2, max_workers_per_host=1, max_seconds_per_host=1.0
    )
    requested = sum(n for path, n in server.requests.items() if path.startswith("/img/"))
    over = _over_budget(folder)
    assert 8 <= requested <= 24, requested
    assert len(over) == len(urls) - requested
    assert folder.stats()["accepted"] == requested


def test_a_split_clock_shares_its_host_budget() -> None:
    now = [0.0]
    clock = SplitClock(10.0, splits=4, clock=lambda: now[0])
    assert clock.share == 2.5 and not clock.spent()
    now[0] = 100.0  # time before the first fetch does not count
    clock.start()
    now[0] = 102.0
    assert not clock.spent()
    now[0] = 102.5
    assert clock.spent()
    assert not SplitClock(None, 4).spent()
