"""A crawl on a loopback site: the pages ledger, `<meta name="robots">` opt-outs and the
per-page image cap, through the whole job (`run_pipeline`, real files, DuckDB reading back).

The site: two plain pages, a page of 12 images (the cap is 5), pages opting out by
`<meta name="robots">` and by `<meta name="lait">`, one whose meta names another bot, a page
robots.txt disallows, a missing page, and links past the site's page cap.
"""

from __future__ import annotations

import dataclasses
import http.server
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to
from conftest import jpeg_bytes

from lait.dataset import DatasetFolder, check_stats
from lait.dataset.layout import PAGES_DIR
from pipeline.beam_options import local_runner
from pipeline.clip import ClipConfig
from pipeline.config import OutputConfig, PipelineConfig, SourcesConfig
from pipeline.crawl import Crawl
from pipeline.fetch import FetchConfig
from pipeline.pages import PAGES_SCHEMA
from pipeline.run import run_pipeline

CAP = 5
MANY = 12  # images on /many.html


def _page(name: str, images: int, meta: str = "", links: tuple[str, ...] = ()) -> bytes:
    imgs = "".join(
        f'<img src="/img/{name}-{i}.jpg" alt="picture {i} of the {name} page on this site">'
        for i in range(images)
    )
    anchors = "".join(f'<a href="{link}">next</a>' for link in links)
    return f"<!doctype html><html><head>{meta}</head><body>{imgs}{anchors}</body></html>".encode()


PAGES: dict[str, bytes] = {
    "/a.html": _page("a", 2, links=("/l1.html", "/l2.html", "/l3.html")),
    "/b.html": _page("b", 2),
    "/many.html": _page("many", MANY),
    "/noai.html": _page("noai", 2, '<meta name="Robots" content="index, NoAI, noimageai">'),
    "/agent.html": _page("agent", 2, '<meta name="lait" content="noimageai">'),
    "/otherbot.html": _page("otherbot", 2, '<meta name="otherbot" content="noai">'),
    "/noindex.html": _page("noindex", 1, '<meta name="robots" content="noindex, nofollow">'),
    "/private/p.html": _page("private", 2),
    "/l1.html": _page("l1", 1),
    "/l2.html": _page("l2", 1),
    "/l3.html": _page("l3", 1),
}
SEEDS = (
    "/a.html",
    "/b.html",
    "/many.html",
    "/noai.html",
    "/agent.html",
    "/otherbot.html",
    "/noindex.html",
    "/private/p.html",
    "/missing.html",
)
SITE_CAP = len(SEEDS) + 2  # the seeds, then 2 of a.html's 3 links (l1, l2; l3 is kept out)
IMAGE = jpeg_bytes(320, 320, (200, 30, 30))


class _Site(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/robots.txt":
            status, kind, body = 200, "text/plain", b"User-agent: *\nDisallow: /private/\n"
        elif self.path in PAGES:
            status, kind, body = 200, "text/html; charset=utf-8", PAGES[self.path]
        elif self.path.startswith("/img/"):
            status, kind, body = 200, "image/jpeg", IMAGE
        else:
            status, kind, body = 404, "text/plain", b"no such page"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _crawl(folder: Path, base_url: str, **fetch: object) -> DatasetFolder:
    config = PipelineConfig(
        sources=SourcesConfig(pages=tuple(base_url + s for s in SEEDS), depth=1),
        fetch=FetchConfig(
            allowed_networks=("127.0.0.1/32",),
            retries=0,
            respect_robots_txt=True,
            max_images_per_page=CAP,
            max_pages_per_site=SITE_CAP,
            **fetch,  # type: ignore[arg-type]
        ),
        clip=ClipConfig(enabled=False),
        output=OutputConfig(folder=str(folder)),
    )
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, enabled=False))
    stats = run_pipeline(config, ["--direct_running_mode=in_memory"], show_progress=False)
    check_stats(stats)
    return DatasetFolder(folder)


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory, base_url: str) -> DatasetFolder:
    return _crawl(tmp_path_factory.mktemp("pages") / "on", base_url)


def _reasons_by_page(folder: DatasetFolder) -> dict[str, Counter[str]]:
    by_page: dict[str, Counter[str]] = {}
    for row in folder.rejects(["page_url", "reject_reason"]).to_pylist():
        page = row["page_url"].rsplit("/", 1)[-1]
        by_page.setdefault(page, Counter())[row["reject_reason"]] += 1
    return by_page


def test_every_page_tried_has_one_row_with_its_outcome(
    crawled: DatasetFolder, base_url: str
) -> None:
    import duckdb

    glob = f"{crawled.path}/{PAGES_DIR}/*.parquet"
    rows = duckdb.sql(
        f"SELECT url, status, final_url, http_status, candidates, over_page_cap, "
        f"meta_robots_opt_out, links, depth FROM read_parquet('{glob}') ORDER BY url"
    ).fetchall()
    by_path = {row[0].removeprefix(base_url): row[1:] for row in rows}
    assert len(by_path) == len(rows)  # one row per page
    expected_status = {s: "fetched" for s in SEEDS}
    expected_status |= {"/private/p.html": "robots_txt_disallowed"}
    expected_status |= {"/missing.html": "http_not_found"}
    expected_status |= {"/l1.html": "fetched", "/l2.html": "fetched", "/l3.html": "over_site_cap"}
    assert {path: row[0] for path, row in by_path.items()} == expected_status
    many = by_path["/many.html"]
    assert many[1:7] == (base_url + "/many.html", 200, MANY, MANY - CAP, 0, 0)
    assert by_path["/noai.html"][4:6] == (0, 2)  # 2 candidates, both opted out
    assert by_path["/a.html"][6] == 3 and by_path["/l1.html"][7] == 1
    assert by_path["/l3.html"][7] == 1 and by_path["/l3.html"][3] == 0
    # Every candidate a fetched page gave is in the dataset folder, accepted or rejected.
    total = duckdb.sql(f"SELECT sum(candidates) FROM read_parquet('{glob}')").fetchone()
    assert total is not None
    assert total[0] == crawled.stats()["candidates"]
    assert pq.read_schema(next(Path(crawled.path, PAGES_DIR).glob("*.parquet"))).equals(
        PAGES_SCHEMA
    )


def test_the_page_cap_ledgers_its_excess(crawled: DatasetFolder) -> None:
    reasons = _reasons_by_page(crawled)
    assert reasons["many.html"]["over_page_cap"] == MANY - CAP
    stats = crawled.stats()
    assert stats["candidates"] == stats["accepted"] + stats["rejected"]
    urls = {
        r["url"]
        for r in crawled.rejects(["url", "reject_reason"]).to_pylist()
        if r["reject_reason"] == "over_page_cap"
    }
    # The first CAP images (in page order) are taken, the rest capped.
    assert urls == {u for u in urls if int(u.rsplit("-", 1)[1].split(".")[0]) >= CAP}
    assert len(urls) == MANY - CAP


def test_meta_robots_noai_opts_a_page_out(crawled: DatasetFolder) -> None:
    reasons = _reasons_by_page(crawled)
    assert reasons["noai.html"] == Counter({"meta_robots_opt_out": 2})
    assert reasons["agent.html"] == Counter({"meta_robots_opt_out": 2})  # <meta name="lait">
    assert "meta_robots_opt_out" not in reasons.get("otherbot.html", Counter())
    assert "meta_robots_opt_out" not in reasons.get("noindex.html", Counter())
    accepted_pages = {
        r["page_url"].rsplit("/", 1)[-1] for r in crawled.metadata(["page_url"]).to_pylist()
    }
    assert "noai.html" not in accepted_pages and "agent.html" not in accepted_pages


def test_respect_meta_robots_off_takes_the_pages(base_url: str) -> None:
    """The off switch, on the crawl alone (no fetch of images needed to see it)."""
    config = FetchConfig(allowed_networks=("127.0.0.1/32",), retries=0, respect_meta_robots=False)
    pipeline = beam.Pipeline(runner=local_runner())
    crawled = (
        pipeline
        | beam.Create([f"{base_url}/noai.html", f"{base_url}/agent.html"])
        | Crawl(config, 0)
    )
    statuses = crawled["candidates"] | beam.Map(lambda r: (r.status.value, r.reject_reason))
    assert_that(statuses, equal_to([("candidate", None)] * 4), label="candidates")
    opted = crawled["pages"] | beam.Map(lambda row: (row.status, row.meta_robots_opt_out))
    assert_that(opted, equal_to([("fetched", 0)] * 2), label="pages")
    pipeline.run().wait_until_finish()
