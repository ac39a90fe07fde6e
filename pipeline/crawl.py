"""Crawl page URLs: fetch each page, extract its image candidates, optionally follow links.

Link following is breadth-first in `depth` rounds, each a Beam stage: a round's pages give
links on the same site (scheme + host + port) as the page, minus every URL already crawled
(a CoGroupByKey, so no worker holds a global "seen" set). "The page" is where its fetch
ended, after redirects: http://example.com redirected to https://www.example.com keeps the
links to https://www.example.com/... (and those to the site it was asked under).

No site gets more than `FetchConfig.max_pages_per_site` pages queued in one job (seeds
included; links beyond it are not fetched, are counted as `pages.over_site_cap` and leave
a row in the pages ledger). Each round keeps, per site, the first URLs in sorted order (a
combiner holding at most the cap), so the choice is the same on every run and no site's
links are ever held as one group.

Each fetched page's candidates pass its page policy (`pipeline.extract.page_policy`): a
`<meta name="robots" content="noai">` page gives them all rejected, and a page with more
than `FetchConfig.max_images_per_page` images gives the excess rejected as `over_page_cap`.
Every page tried leaves one `PageRow` for the pages ledger (`pipeline.pages`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.extract import InvalidUrlError, canonical_url, extract_page
from pipeline.extract.page_policy import PagePolicy, apply_page_policy
from pipeline.fetch import FetchConfig, Fetcher, FetchRejected
from pipeline.fetch.metrics import FetchMetrics
from pipeline.outcomes import NAMESPACE, count_page
from pipeline.pages import FETCHED, OVER_SITE_CAP, PageRow

_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)


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


LINKS, PAGES = "links", "pages"  # FetchPage's tagged outputs beside its candidates


class FetchPage(beam.DoFn):
    """(site, url) in; the page's candidate records out (the per-page cap and the meta robots
    opt-out applied: `pipeline.extract.page_policy`), with its same-site links (tagged
    LINKS, as (link, site)) and one `PageRow` (tagged PAGES) whatever became of the page.

    Records leave one by one, never as one element holding a whole page."""

    def __init__(self, fetch: FetchConfig, source: str, depth: int = 0) -> None:
        self.fetch_config = fetch
        self.source = source
        self.depth = depth

    def setup(self) -> None:
        self.fetcher = Fetcher(self.fetch_config)
        self.metrics = FetchMetrics()
        self.policy = PagePolicy.of(self.fetch_config)

    def process(self, element: tuple[str, str]) -> Iterator[Any]:
        site, url = element
        try:
            response = self.fetcher.fetch(url, accept="page")
        except FetchRejected as rejection:
            count_page(rejection.reason.value)
            yield beam.pvalue.TaggedOutput(
                PAGES,
                PageRow(url, site, self.depth, rejection.reason.value, detail=rejection.detail),
            )
            return
        finally:
            self.metrics.publish(self.fetcher)
        count_page(FETCHED)
        match = _CHARSET.search(response.headers.get("content-type", ""))
        charset = match.group(1) if match else None
        # Sighted as the URL asked for: two seeds redirected to one page are two sightings.
        page = extract_page(
            response.body, response.url, source=self.source, headers_charset=charset, where=url
        )
        policed = apply_page_policy(page.records, page.meta, self.policy)
        if policed.capped:
            count_page("over_page_cap")
        if policed.opt_out is not None:
            count_page("meta_robots_opt_out")
        yield from policed.records
        # Same-site is judged from where the fetch ended (http -> https, apex -> www are the
        # normal case), and the site it was asked under still counts.
        sites = {site, site_of(response.url)}
        links = [link for link in page.links if site_of(link) in sites]
        for link in links:
            yield beam.pvalue.TaggedOutput(LINKS, (link, site))
        yield beam.pvalue.TaggedOutput(
            PAGES,
            PageRow(
                url,
                site,
                self.depth,
                FETCHED,
                final_url=response.url,
                detail=f"<meta {policed.opt_out}>" if policed.opt_out else None,
                http_status=response.status,
                candidates=len(policed.records),
                over_page_cap=policed.capped,
                meta_robots_opt_out=policed.opted_out,
                links=len(links),
            ),
        )

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


def _over_site_cap(
    element: tuple[str, dict[str, Iterable[object]]], depth: int
) -> Iterator[PageRow]:
    """From CoGroupByKey(url → {'new': [site], 'admitted': [...]}): a ledger row for a new URL
    its site's cap kept from being queued."""
    url, groups = element
    if any(True for _ in groups["admitted"]):
        return
    for site in groups["new"]:
        yield PageRow(url, str(site), depth, OVER_SITE_CAP)
        return


class Crawl(beam.PTransform):
    """Page URLs in; {"candidates": records (some already rejected by extraction or the page
    policy), "pages": a `PageRow` per page tried or kept out by its site's cap} out."""

    def __init__(self, fetch: FetchConfig, depth: int, source: str = "web") -> None:
        super().__init__()
        self.fetch = fetch
        self.depth = depth
        self.source = source

    def expand(self, urls: beam.PCollection) -> dict[str, beam.PCollection]:
        cap = self.fetch.max_pages_per_site
        frontier = urls | "Seeds" >> beam.Map(seed_of) | "DistinctSeeds" >> beam.Distinct()
        seen = frontier | "SeenSeeds" >> beam.Map(lambda pair: (pair[1], True))
        queued = frontier  # (site, url) of every page queued so far, for the per-site cap
        candidates, pages = [], []
        for level in range(self.depth + 1):
            fetched = frontier | f"Fetch{level}" >> beam.ParDo(
                FetchPage(self.fetch, self.source, level)
            ).with_outputs(LINKS, PAGES, main="candidates")
            candidates.append(fetched.candidates)
            pages.append(fetched[PAGES])
            if level == self.depth:
                break
            new = (
                {"found": fetched[LINKS], "seen": seen}
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
            pages.append(
                {
                    "new": new | f"NewByUrl{level}" >> beam.Map(lambda pair: (pair[1], pair[0])),
                    "admitted": frontier
                    | f"AdmittedByUrl{level}" >> beam.Map(lambda pair: (pair[1], True)),
                }
                | f"Admitted{level}" >> beam.CoGroupByKey()
                | f"OverSiteCap{level}" >> beam.FlatMap(_over_site_cap, depth=level + 1)
            )
            # Every new URL is seen from now on, queued or kept out by its site's cap: a site
            # at its cap stays there, so a URL kept out is never queued later either.
            seen = (
                seen,
                new | f"Seen{level}" >> beam.Map(lambda pair: (pair[1], True)),
            ) | f"AllSeen{level}" >> beam.Flatten()
            queued = (queued, frontier) | f"AllQueued{level}" >> beam.Flatten()
        return {
            "candidates": candidates | "AllCandidates" >> beam.Flatten(),
            "pages": pages | "AllPages" >> beam.Flatten(),
        }


class CrawlPages(beam.PTransform):
    """Page URLs in; candidate records (some already rejected by extraction) out: `Crawl`
    without its pages ledger."""

    def __init__(self, fetch: FetchConfig, depth: int, source: str = "web") -> None:
        super().__init__()
        self.crawl = Crawl(fetch, depth, source)

    def expand(self, urls: beam.PCollection) -> beam.PCollection:
        return (urls | "Crawl" >> self.crawl)["candidates"]
