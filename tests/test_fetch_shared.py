"""The per-process DNS and robots.txt caches every fetcher (and DoFn instance) of a process shares.

Real loopback server; names are pointed at 127.0.0.1 by an injected resolver that records
every lookup, or are `localhost` (the system resolver, offline).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from fetch_server import PNG, FetchTestServer
from test_crawl_site import SiteHandler

from lait.record import RejectReason
from pipeline.beam_options import local_runner
from pipeline.crawl import CrawlPages
from pipeline.fetch import FetchConfig, Fetcher, FetchRejected
from pipeline.fetch.shared import DnsCache, clear_shared_caches

LOOPBACK = ("127.0.0.1/32",)


class CountingResolver:
    """Names → addresses from a table the test may change; records every lookup."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, host: str, port: int) -> list[str]:
        with self.lock:
            self.calls.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.table[host])


@pytest.fixture
def server() -> Iterator[FetchTestServer]:
    clear_shared_caches()
    srv = FetchTestServer(handler=SiteHandler).start()
    yield srv
    srv.stop()
    clear_shared_caches()


def fetchers(resolver: CountingResolver, n: int = 2, **settings: Any) -> list[Fetcher]:
    config = FetchConfig(allowed_networks=LOOPBACK, retries=0, **settings)
    return [Fetcher(config, resolver=resolver) for _ in range(n)]


def test_fetchers_of_a_process_share_dns_answers(server: FetchTestServer) -> None:
    resolver = CountingResolver({"demo.test": ["127.0.0.1"], "robots.test": ["127.0.0.1"]})
    first, second = fetchers(resolver)
    for fetcher in (first, second, first):
        assert fetcher.fetch(f"http://demo.test:{server.port}/img").body == PNG
    second.fetch(f"http://robots.test:{server.port}/img")
    assert resolver.calls == ["demo.test", "robots.test"]
    assert first.counters()["dns_lookups"] + second.counters()["dns_lookups"] == 2
    # A fetcher with another resolver has its own answers.
    other = CountingResolver({"demo.test": ["127.0.0.1"]})
    fetchers(other, 1)[0].fetch(f"http://demo.test:{server.port}/img")
    assert other.calls == ["demo.test"]


def test_a_cached_answer_is_vetted_on_every_hop(server: FetchTestServer) -> None:
    resolver = CountingResolver({"mixed.test": ["127.0.0.1", "10.0.0.1"]})
    fetcher = fetchers(resolver, 1)[0]
    for _ in range(3):
        with pytest.raises(FetchRejected) as refused:
            fetcher.fetch(f"http://mixed.test:{server.port}/img")
        assert refused.value.reason is RejectReason.BLOCKED_ADDRESS
    assert resolver.calls == ["mixed.test"]  # asked once, refused every time
    assert fetcher.counters()["connections"] == 0
    # A redirect hop to a name whose answer is cached is vetted too, and refused.
    resolver.table.update({"metadata.test": ["169.254.169.254"], "ok.test": ["127.0.0.1"]})
    for url in ("http://metadata.test/latest/", f"http://ok.test:{server.port}/to-metadata"):
        with pytest.raises(FetchRejected) as hop:
            fetcher.fetch(url)
        assert hop.value.reason is RejectReason.BLOCKED_ADDRESS
    assert resolver.calls.count("metadata.test") == 1
    assert fetcher.counters()["connections"] == 1  # ok.test's, which redirected


def test_an_expired_answer_is_asked_again_and_vetted_afresh(server: FetchTestServer) -> None:
    resolver = CountingResolver({"rebind.test": ["127.0.0.1"]})
    fetcher = fetchers(resolver, 1, dns_cache_ttl_s=0)[0]  # 0: no reuse at all
    assert fetcher.fetch(f"http://rebind.test:{server.port}/img").body == PNG
    resolver.table["rebind.test"] = ["192.168.1.1"]  # the name now points inside the network
    with pytest.raises(FetchRejected) as refused:
        fetcher.fetch(f"http://rebind.test:{server.port}/img")
    assert refused.value.reason is RejectReason.BLOCKED_ADDRESS
    assert resolver.calls == ["rebind.test", "rebind.test"]


def test_dns_cache_ttl_size_and_failures() -> None:
    now = [0.0]
    resolver = CountingResolver({f"h{i}.test": ["127.0.0.1"] for i in range(5)})
    cache = DnsCache(resolver, ttl_s=60.0, max_entries=3, clock=lambda: now[0])
    for _ in range(2):
        assert cache.resolve("h0.test", 80) == ["127.0.0.1"]
    assert resolver.calls == ["h0.test"]
    now[0] = 61.0  # past the TTL
    cache.resolve("h0.test", 80)
    assert resolver.calls == ["h0.test", "h0.test"]
    for i in range(1, 5):  # four more names: the least recently used are evicted
        cache.resolve(f"h{i}.test", 80)
    assert len(cache) == 3
    cache.resolve("h4.test", 80)
    cache.resolve("h0.test", 80)  # evicted: asked again
    assert resolver.calls[-1] == "h0.test" and resolver.calls.count("h4.test") == 1
    for _ in range(3):  # a failed lookup is kept too, for at most 30 s
        with pytest.raises(socket.gaierror):
            cache.resolve("nowhere.test", 80)
    assert resolver.calls.count("nowhere.test") == 1
    now[0] += 31.0
    with pytest.raises(socket.gaierror):
        cache.resolve("nowhere.test", 80)
    assert resolver.calls.count("nowhere.test") == 2


def test_one_lookup_and_one_robots_txt_under_many_threads(server: FetchTestServer) -> None:
    resolver = CountingResolver({"robots.test": ["127.0.0.1"]})
    group = fetchers(resolver, 4, respect_robots_txt=True)
    url = f"http://robots.test:{server.port}/img"
    threads = [threading.Thread(target=group[i % 4].fetch, args=(url,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert resolver.calls == ["robots.test"]
    assert server.state.hits["robots:robots.test"] == 1
    assert sum(f.counters()["robots_txt_fetches"] for f in group) == 1
    assert sum(f.counters()["fetched"] for f in group) == 16
    # The shared rules are still each fetcher's to apply.
    with pytest.raises(FetchRejected) as refused:
        group[3].fetch(f"http://robots.test:{server.port}/private/img")
    assert refused.value.reason is RejectReason.ROBOTS_TXT_DISALLOWED
    assert server.state.hits["robots:robots.test"] == 1


def test_a_crawl_asks_robots_txt_and_dns_once_per_process(server: FetchTestServer) -> None:
    # Three rounds are three DoFn instances (Fetch0, Fetch1, Fetch2), each with its fetcher.
    config = FetchConfig(allowed_networks=LOOPBACK, retries=0, respect_robots_txt=True)
    pipeline = beam.Pipeline(runner=local_runner())
    _ = pipeline | beam.Create([f"http://localhost:{server.port}/wide"]) | CrawlPages(config, 2)
    result = pipeline.run()
    result.wait_until_finish()
    counters: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter())["counters"]:
        name = counter.key.metric.name
        counters[name] = counters.get(name, 0) + int(counter.committed or counter.attempted or 0)
    assert counters["pages.fetched"] == 61
    assert server.state.hits["robots:localhost"] == 1
    assert counters["fetch.robots_fetches"] == 1
    assert counters["fetch.dns_lookups"] == 1
    assert counters["fetch.requests"] == 61 + 1  # the pages and the one robots.txt
