"""Crawl page URLs: fetch each page, extract its image candidates, optionally follow links.

Link following is breadth-first in `depth` rounds, each a Beam stage: a round's pages give
links on the same site (scheme + host + port) as the page, minus every URL already crawled
(a CoGroupByKey, so no worker holds a global "seen" set). "The page" is where its fetch
ended, after redirects: http://example.com redirected to https://www.example.com keeps the
links to https://www.example.com/... (and those to the site it was asked under).

No site gets more than `FetchConfig.max_pages_per_site` pages queued in one job (seeds
included; links beyond it are not fetched and are counted as `pages.over_site_cap`). Each
round keeps, per site, the first URLs in sorted order (a combiner holding at most the cap),
so the choice is the same on every run and no site's links are ever held as one group.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.metrics import Metrics

from lait.record import Record
from pipeline.extract import InvalidUrlError, canonical_url, extract_candidates, extract_links
from pipeline.fetch import FetchConfig, Fetcher, FetchRejected
from pipeline.fetch.metrics import FetchMetrics
from pipeline.outcomes import NAMESPACE, count_page

_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)


@dataclass(frozen=True)
class CrawledPage:
    """A fetched page: its candidates, and same-site links to follow.

    `url` is where the fetch ended (after redirects), `site` the site it was asked under.
    """

    url: str
    site: str
    candidates: tuple[Record, ...]
    links: tuple[str, ...]


def site_of(url: str) -> str:
    """scheme://host:port, the unit of "same site" for link following."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"


def seed_of(url: str) -> tuple[str, str]:
    """(site, url) for a seed URL, in the canonical form extracted links have, so a seed and
    a link to it are one frontier key and its site matches its links' sites. A URL that has
    no canonical form goes on as given, for the fetcher to reject with its reason."""
    try:
        url = canonical_url(url)
    except InvalidUrlError:
        url = url.strip()
    return site_of(url), url


class FetchPage(beam.DoFn):
    """(site, url) in; a `CrawledPage` out, or nothing (counted) if the page fails."""

    def __init__(self, fetch: FetchConfig, source: str) -> None:
        self.fetch_config = fetch
        self.source = source

    def setup(self) -> None:
        self.fetcher = Fetcher(self.fetch_config)
        self.metrics = FetchMetrics()

    def process(self, element: tuple[str, str]) -> Iterator[CrawledPage]:
        site, url = element
        try:
            response = self.fetcher.fetch(url, accept="page")
        except FetchRejected as rejection:
            count_page(rejection.reason.value)
            return
        finally:
            self.metrics.publish(self.fetcher)
        count_page("fetched")
        match = _CHARSET.search(response.headers.get("content-type", ""))
        charset = match.group(1) if match else None
        # Sighted as the URL asked for: two seeds redirected to one page are two sightings.
        candidates = extract_candidates(
            response.body, response.url, source=self.source, headers_charset=charset, where=url
        )
        # Same-site is judged from where the fetch ended (http -> https, apex -> www are the
        # normal case), and the site it was asked under still counts.
        sites = {site, site_of(response.url)}
        links = tuple(
            link
            for link in extract_links(response.body, response.url, headers_charset=charset)
            if site_of(link) in sites
        )
        yield CrawledPage(response.url, site, tuple(candidates), links)

    def teardown(self) -> None:
        self.fetcher.close()


def _new_urls(element: tuple[str, dict[str, Iterable[object]]]) -> Iterator[tuple[str, str]]:
    """From CoGroupByKey(url → {'found': ..., 'seen': ...}): (site, url) found, not yet seen."""
    url, groups = element
    if not any(True for _ in groups["seen"]) and any(True for _ in groups["found"]):
        yield site_of(url), url


def _admit(element: tuple[str, dict[str, Iterable[object]]], cap: int) -> Iterator[tuple[str, str]]:
    """From CoGroupByKey(site → {'first': [smallest new URLs], 'found': [count], 'queued':
    [count]}): the new URLs that fit under the site's cap; the rest are counted."""
    site, groups = element
    queued = sum(int(n) for n in groups["queued"])  # type: ignore[call-overload]
    found = sum(int(n) for n in groups["found"])  # type: ignore[call-overload]
    first = sorted(url for urls in groups["first"] for url in urls)  # type: ignore[attr-defined]
    admitted = first[: max(0, cap - queued)]
    if found > len(admitted):
        Metrics.counter(NAMESPACE, "pages.over_site_cap").inc(found - len(admitted))
    for url in admitted:
        yield site, str(url)


class CrawlPages(beam.PTransform):
    """Page URLs in; candidate records (some already rejected by extraction) out."""

    def __init__(self, fetch: FetchConfig, depth: int, source: str = "web") -> None:
        super().__init__()
        self.fetch = fetch
        self.depth = depth
        self.source = source

    def expand(self, urls: beam.PCollection) -> beam.PCollection:
        cap = self.fetch.max_pages_per_site
        frontier = urls | "Seeds" >> beam.Map(seed_of) | "DistinctSeeds" >> beam.Distinct()
        seen = frontier | "SeenSeeds" >> beam.Map(lambda pair: (pair[1], True))
        queued = frontier  # (site, url) of every page queued so far, for the per-site cap
        page_rounds = []
        for level in range(self.depth + 1):
            pages = frontier | f"Fetch{level}" >> beam.ParDo(FetchPage(self.fetch, self.source))
            page_rounds.append(pages)
            if level == self.depth:
                break
            found = pages | f"Links{level}" >> beam.FlatMap(
                lambda page: ((link, page.site) for link in page.links)
            )
            new = (
                {"found": found, "seen": seen}
                | f"Unseen{level}" >> beam.CoGroupByKey()
                | f"NewUrls{level}" >> beam.FlatMap(_new_urls)
            )
            frontier = (
                {
                    "first": new | f"FirstPerSite{level}" >> beam.combiners.Top.SmallestPerKey(cap),
                    "found": new | f"FoundPerSite{level}" >> beam.combiners.Count.PerKey(),
                    "queued": queued | f"QueuedPerSite{level}" >> beam.combiners.Count.PerKey(),
                }
                | f"UnderCap{level}" >> beam.CoGroupByKey()
                | f"Frontier{level}" >> beam.FlatMap(_admit, cap=cap)
            )
            seen = (
                seen,
                frontier | f"Seen{level}" >> beam.Map(lambda pair: (pair[1], True)),
            ) | f"AllSeen{level}" >> beam.Flatten()
            queued = (queued, frontier) | f"AllQueued{level}" >> beam.Flatten()
        return (
            page_rounds
            | "AllPages" >> beam.Flatten()
            | "Candidates" >> beam.FlatMap(lambda page: page.candidates)
        )
