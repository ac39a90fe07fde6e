"""Crawl rules on a real loopback site: same-site from the page's final URL, pages per site capped.

`localhost` and `127.0.0.1` are two host names of one loopback server, the way `example.com`
and `www.example.com` are two names of one site: a seed on one redirected to the other must
keep its links. Only 127.0.0.1 is ever connected to.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from fetch_server import FetchTestHandler, FetchTestServer, self_signed_tls

from pipeline.beam_options import local_runner
from pipeline.crawl import CrawlPages
from pipeline.fetch import FetchConfig

WIDE = 30  # links on /wide


def page(image: str, links: list[str]) -> bytes:
    anchors = "".join(f'<a href="{link}">more</a>' for link in links)
    return (
        f'<!doctype html><img src="/img/{image}.jpg" alt="a picture of the {image} page">{anchors}'
    ).encode()


class SiteHandler(FetchTestHandler):
    """A small site: /start and /secure redirect elsewhere, /home links around, /wide fans out."""

    def _route(self, path: str, query: dict[str, list[str]], ident: str) -> None:
        port, https_base = self.server.port, getattr(self.server, "https_base", "")
        seed_base = getattr(self.server, "seed_base", f"http://127.0.0.1:{port}")
        if path == "/start":  # like example.com -> www.example.com
            self._reply(301, b"", "text/plain", {"Location": f"http://localhost:{port}/home"})
        elif path == "/secure":  # like http://example.com -> https://www.example.com
            self._reply(301, b"", "text/plain", {"Location": f"{https_base}/home"})
        elif path == "/home":
            links = [
                "/a",  # relative: on the final site
                f"{self._base()}/b",  # absolute, final site
                f"{seed_base}/c",  # the site the seed was asked under
                "http://elsewhere.invalid/d",  # another site: never followed
            ]
            self._reply(200, page("home", links), "text/html")
        elif path in ("/a", "/b", "/c", "/d"):
            self._reply(200, page(path.strip("/"), []), "text/html")
        elif path == "/wide":
            self._reply(200, page("wide", [f"/w/{i:02d}" for i in range(WIDE)]), "text/html")
        elif path.startswith("/w/"):
            n = path.rsplit("/", 1)[1]
            self._reply(200, page(f"w{n}", [f"/x/{n}"]), "text/html")
        elif path.startswith("/x/"):
            self._reply(200, page("x" + path.rsplit("/", 1)[1], []), "text/html")
        else:
            super()._route(path, query, ident)

    def _base(self) -> str:
        scheme = "https" if getattr(self.server, "is_tls", False) else "http"
        return f"{scheme}://{self.headers['Host']}"


@pytest.fixture
def site() -> Iterator[FetchTestServer]:
    server = FetchTestServer(handler=SiteHandler).start()
    yield server
    server.stop()


def crawl(seeds: list[str], depth: int, expected: list[str], **fetch: Any) -> dict[str, int]:
    """Crawl `seeds` on the local runner, assert the candidates' image URLs are `expected`;
    return the job's page counters."""
    config = FetchConfig(allowed_networks=("127.0.0.1/32",), retries=0, **fetch)
    pipeline = beam.Pipeline(runner=local_runner())
    images = (
        pipeline
        | beam.Create(seeds)
        | CrawlPages(config, depth)
        | beam.Map(lambda record: record.url)
    )
    assert_that(images, equal_to(expected))
    result = pipeline.run()
    result.wait_until_finish()
    counters: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter())["counters"]:
        name = counter.key.metric.name  # one counter per step: summed over the steps
        if name.startswith("pages."):
            value = int(counter.committed or counter.attempted or 0)
            counters[name] = counters.get(name, 0) + value
    return counters


def images_of(base: str, names: list[str]) -> list[str]:
    return [f"{base}/img/{name}.jpg" for name in names]


def test_a_seed_redirected_to_another_host_keeps_its_links(site: FetchTestServer) -> None:
    port = site.port
    counters = crawl(
        [f"http://127.0.0.1:{port}/start"],
        depth=1,
        expected=[
            *images_of(f"http://localhost:{port}", ["home", "a", "b"]),
            *images_of(f"http://127.0.0.1:{port}", ["c"]),
        ],
    )
    assert counters["pages.fetched"] == 4
    assert site.state.hits["/d"] == 0 and site.state.hits["/home"] == 1
    assert "pages.over_site_cap" not in counters


def test_http_redirected_to_https_keeps_its_links(site: FetchTestServer, tmp_path: Path) -> None:
    tls, ca = self_signed_tls(tmp_path, "localhost")
    secure = FetchTestServer(tls=tls, handler=SiteHandler)
    secure.is_tls = True  # type: ignore[attr-defined]
    secure.seed_base = f"http://127.0.0.1:{site.port}"  # type: ignore[attr-defined]
    secure.start()
    try:
        https_base = f"https://localhost:{secure.port}"
        site.https_base = https_base  # type: ignore[attr-defined]
        counters = crawl(
            [f"http://127.0.0.1:{site.port}/secure"],
            depth=1,
            expected=[
                *images_of(https_base, ["home", "a", "b"]),
                *images_of(f"http://127.0.0.1:{site.port}", ["c"]),
            ],
            ca_certs=str(ca),
        )
    finally:
        secure.stop()
    assert counters["pages.fetched"] == 4
    assert secure.state.hits["/a"] == secure.state.hits["/b"] == 1
    assert site.state.hits["/c"] == 1


def test_pages_per_site_are_capped_and_the_excess_counted(site: FetchTestServer) -> None:
    base = f"http://127.0.0.1:{site.port}"
    cap = 10
    # Round 0: the seed. Round 1: 30 links, the first 9 (sorted) fit. Round 2: those 9 pages
    # link to 9 more, none fit.
    first = [f"w{i:02d}" for i in range(cap - 1)]
    counters = crawl(
        [f"{base}/wide"],
        depth=2,
        expected=images_of(base, ["wide", *first]),
        max_pages_per_site=cap,
    )
    assert counters["pages.fetched"] == cap
    assert counters["pages.over_site_cap"] == (WIDE - (cap - 1)) + (cap - 1)
    page_hits = sum(n for path, n in site.state.hits.items() if path.startswith(("/w", "/x")))
    assert page_hits == cap


def test_the_default_cap_is_generous(site: FetchTestServer) -> None:
    base = f"http://127.0.0.1:{site.port}"
    wide = [f"w{i:02d}" for i in range(WIDE)]
    narrow = [f"x{i:02d}" for i in range(WIDE)]
    counters = crawl([f"{base}/wide"], depth=2, expected=images_of(base, ["wide", *wide, *narrow]))
    assert FetchConfig().max_pages_per_site >= 10_000
    assert counters["pages.fetched"] == 1 + 2 * WIDE
    assert "pages.over_site_cap" not in counters
