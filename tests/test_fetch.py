"""The safe fetcher against a real HTTP(S) server on 127.0.0.1.

Only loopback traffic: names are pointed at addresses by an injected resolver, and every
non-loopback address in these tests must be refused before a socket is opened (the
fetcher's `connections` counter proves it).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fetch_server import PAGE, PNG, FetchTestServer, KeepAliveHandler, self_signed_tls

from lait.record import RejectReason, Stage
from pipeline.fetch import FetchConfig, Fetcher, FetchRejected
from pipeline.fetch.addresses import AddressBlocked, AddressPolicy, why_blocked
from pipeline.fetch.robots import x_robots_opt_out
from pipeline.fetch.urls import parse_target

LOOPBACK = ("127.0.0.1/32",)


class FakeResolver:
    """Maps names to fixed addresses and records every lookup; unknown names fail."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


TEST_NAMES = {
    "demo.test": ["127.0.0.1"],
    "robots.test": ["127.0.0.1"],
    "norobots.test": ["127.0.0.1"],
    "brokenrobots.test": ["127.0.0.1"],
    "secure.test": ["127.0.0.1"],
    "wrong.test": ["127.0.0.1"],
    "metadata.test": ["169.254.169.254"],
    "private10.test": ["10.0.0.1"],
    "private192.test": ["192.168.1.1"],
    "cgnat.test": ["100.64.0.1"],
    "loop6.test": ["::1"],
    "ec2v6.test": ["fd00:ec2::254"],
    "mapped.test": ["::ffff:10.0.0.1"],
    "mixed.test": ["127.0.0.1", "10.0.0.1"],
}


@pytest.fixture(scope="module")
def server() -> Iterator[FetchTestServer]:
    srv = FetchTestServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def make_fetcher() -> Iterator[Callable[..., tuple[Fetcher, FakeResolver]]]:
    made: list[Fetcher] = []

    def make(**overrides: object) -> tuple[Fetcher, FakeResolver]:
        settings: dict[str, object] = {
            "allowed_networks": LOOPBACK,
            "backoff_s": 0.01,
            "connect_timeout_s": 2.0,
            "total_timeout_s": 5.0,
        }
        settings.update(overrides)
        resolver = FakeResolver(TEST_NAMES)
        fetcher = Fetcher(FetchConfig(**settings), resolver=resolver)  # type: ignore[arg-type]
        made.append(fetcher)
        return fetcher, resolver

    yield make
    for fetcher in made:
        fetcher.close()


def rejection(fetcher: Fetcher, url: str, accept: str = "any") -> FetchRejected:
    with pytest.raises(FetchRejected) as info:
        fetcher.fetch(url, accept=accept)  # type: ignore[arg-type]
    # INVALID_URL is filed under the extract stage in `lait.record`; the fetcher reuses it.
    assert info.value.reason.stage is Stage.FETCH or info.value.reason is RejectReason.INVALID_URL
    return info.value


# -- successful fetches ------------------------------------------------------------------------


def test_fetches_image_and_page(server: FetchTestServer, make_fetcher: Callable) -> None:
    fetcher, _ = make_fetcher()
    image = fetcher.fetch(f"http://127.0.0.1:{server.port}/img", accept="image")
    assert image.status == 200
    assert image.body == PNG
    assert image.content_type == "image/png"
    assert image.headers["content-length"] == str(len(PNG))
    assert image.redirects == ()
    page = fetcher.fetch(f"http://127.0.0.1:{server.port}/page", accept="page")
    assert page.body == PAGE
    assert page.content_type == "text/html"
    counts = fetcher.counters()
    assert counts["requests"] == 2
    assert counts["fetched"] == 2
    assert counts["bytes"] == len(PNG) + len(PAGE)


def test_connects_to_resolved_address_with_host_header_and_user_agent(
    server: FetchTestServer, make_fetcher: Callable
) -> None:
    fetcher, resolver = make_fetcher()
    response = fetcher.fetch(f"http://demo.test:{server.port}/echo?id=host", accept="image")
    assert response.body == PNG
    assert response.url == f"http://demo.test:{server.port}/echo?id=host"
    assert resolver.calls == ["demo.test"]
    seen = server.state.seen_headers[-1]
    assert seen["host"] == f"demo.test:{server.port}"
    assert seen["user-agent"] == FetchConfig().user_agent


def test_https_pins_address_but_checks_certificate_and_sni_by_name(
    tmp_path: Path, make_fetcher: Callable
) -> None:
    context, ca_file = self_signed_tls(tmp_path, "secure.test")
    tls_server = FetchTestServer(tls=context).start()
    try:
        fetcher, _ = make_fetcher(ca_certs=str(ca_file), retries=0)
        response = fetcher.fetch(f"https://secure.test:{tls_server.port}/img", accept="image")
        assert response.body == PNG
        assert "secure.test" in tls_server.state.sni
        # Same address, another name: the certificate does not match, so no fetch.
        refused = rejection(fetcher, f"https://wrong.test:{tls_server.port}/img")
        assert refused.reason is RejectReason.CONNECTION_ERROR
        assert "TLS" in refused.detail
    finally:
        tls_server.stop()


def test_connections_are_reused_per_host(make_fetcher: Callable) -> None:
    keep_alive = FetchTestServer(handler=KeepAliveHandler).start()
    try:
        fetcher, _ = make_fetcher()
        for path in ("/img", "/page", "/missing", "/img"):
            with contextlib.suppress(FetchRejected):
                fetcher.fetch(f"http://demo.test:{keep_alive.port}{path}")
        counts = fetcher.counters()
        assert counts["requests"] == 4
        # Reused after full reads; the 404's unread body closes its connection.
        assert counts["connections"] == 2
    finally:
        keep_alive.stop()


# -- HTTP status codes and retries -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/missing", "/gone"])
def test_not_found_is_not_retried(
    server: FetchTestServer, make_fetcher: Callable, path: str
) -> None:
    fetcher, _ = make_fetcher()
    before = server.state.hits[path]
    assert rejection(fetcher, f"http://127.0.0.1:{server.port}{path}").reason is (
        RejectReason.HTTP_NOT_FOUND
    )
    assert server.state.hits[path] - before == 1
    assert fetcher.counters()["retries"] == 0
    assert fetcher.counters()["rejected_http_not_found"] == 1


def test_other_client_error_is_not_retried(server: FetchTestServer, make_fetcher: Callable) -> None:
    fetcher, _ = make_fetcher()
    refused = rejection(fetcher, f"http://127.0.0.1:{server.port}/forbidden")
    assert refused.reason is RejectReason.HTTP_CLIENT_ERROR
    assert "403" in refused.detail
    assert fetcher.counters()["retries"] == 0


def test_server_error_then_success_is_retried(
    server: FetchTestServer, make_fetcher: Callable
) -> None:
    fetcher, _ = make_fetcher(retries=2)
    response = fetcher.fetch(f"http://127.0.0.1:{server.port}/flaky?id=once", accept="image")
    assert response.body == PNG
    counts = fetcher.counters()
    assert counts["retries"] == 1
    assert counts["requests"] == 2


def test_persistent_server_error_gives_up_after_retries(
    server: FetchTestServer, make_fetcher: Callable
) -> None:
    fetcher, _ = make_fetcher(retries=2)
    before = server.state.hits["/always500"]
    refused = rejection(fetcher, f"http://127.0.0.1:{server.port}/always500")
    assert refused.reason is RejectReason.HTTP_SERVER_ERROR
    assert server.state.hits["/always500"] - before == 3
    assert fetcher.counters()["retries"] == 2


def test_429_honours_retry_after(server: FetchTestServer, make_fetcher: Callable) -> None:
    fetcher, _ = make_fetcher(retries=1)
    started = time.monotonic()
    response = fetcher.fetch(f"http://127.0.0.1:{server.port}/rate?id=a", accept="image")
    assert response.body == PNG
    assert time.monotonic() - started >= 0.95  # Retry-After: 1, far above backoff_s
    assert fetcher.counters()["retries"] == 1


def test_429_forever_is_a_client_error(server: FetchTestServer, make_fetcher: Callable) -> None:
    fetcher, _ = make_fetcher(retries=2)
    refused = rejection(fetcher, f"http://127.0.0.1:{server.port}/rate-always")
    assert refused.reason is RejectReason.HTTP_CLIENT_ERROR
    assert fetcher.counters()["retries"] == 2


def test_429_with_retry_after_over_cap_gives_up_at_once(
    server: FetchTestServer, make_fetcher: Callable
) -> None:
    fetcher, _ = make_fetcher(retries=2, max_retry_after_s=5.0)
    started = time.monotonic()
    refused = rejection(fetcher, f"http://127.0.0.1:{server.port}/rate-long")
    assert refused.reason is RejectReason.HTTP_CLIENT_ERROR
    assert "cap" in refused.detail
    assert time.monotonic() - started < 1.0
    assert fetcher.counters()["retries"] == 0


# -- time limits ---------------------------------------------------------------------------------


def test_slow_headers_time_out(server: FetchTestServer, make_fetcher: Callable) -> None:
    fetcher, _ = make_fetcher(total_timeout_s=0.3, retries=0)
    started = time.monotonic()
    assert rejection(fetcher, f"http://127.0.0.1:{server.port}/slow").reason is (
        RejectReason.TIMEOUT
    )
    assert time.monotonic() - started < 1.5


def test_slow_drip_body_hits_total_timeout(server: FetchTestServer, make_fetcher: Callable) -> None:
    # Every byte arrives well within any per-read timeout; only the total limit stops it.
    fetcher, _ = make_fetcher(total_timeout_s=0.5, retries=0)
    started = time.monotonic()
    refused = rejection(fetcher, f"http://127.0.0.1:{server.port}/drip", accept="image")
    assert refused.reason is RejectReason.TIMEOUT
    assert time.monotonic() - started < 1.5


def test_timeouts_are_retried(server: FetchTestServer, make_fetcher: Callable) -> None:
    fetcher, _ = make_fetcher(total_timeout_s=0.2, retries=1)
    assert rejection(fetcher, f"http://127.0.0.1:{server.port}/slow").reason is (
        RejectReason.TIMEOUT
    )
    assert fetcher.counters()["retries"] == 1


def test_connection_refused(make_fetcher: Callable) -> None:
    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fetcher, _ = make_fetcher(retries=1)
    refused = rejection(fetcher, f"http://demo.test:{port}/img")
    assert refused.reason is RejectReason.CONNECTION_ERROR
    assert fetcher.counters()["retries"] == 1


# -- redirects -----------------------------------------------------------------------------------


def test_redirect_chain_within_limit(server: FetchTestServer, make_fetcher: Callable) -> None:
    fetcher, _ = make_fetcher(max_redirects=5)
    base = f"http://127.0.0.1:{server.port}"
    response = fetcher.fetch(f"{base}/redirect/5", accept="image")
    assert response.body == PNG
    assert response.url == f"{base}/redirect/0"
    assert response.redirects == tuple(f"{base}/redirect/{n}" for n in (5, 4, 3, 2, 1))
    assert fetcher.counters()["redirects"] == 5


def test_redirect_chain_over_limit(server: FetchTestServer, make_fetcher: Callable) -> None:
    fetcher, _ = make_fetcher(max_redirects=5)
    before = server.state.hits["/redirect/0"]
    refused = rejection(fetcher, f"http://127.0.0.1:{server.port}/redirect/6")
    assert refused.reason is RejectReason.TOO_MANY_REDIRECTS
    assert server.state.hits["/redirect/0"] == before


def test_redirect_loop(server: FetchTestServer, make_fetcher: Callable) -> None:
    fetcher, _ = make_fetcher(max_redirects=10)
    refused = rejection(fetcher, f"http://127.0.0.1:{server.port}/loop/a")
    assert refused.reason is RejectReason.REDIRECT_LOOP


def test_redirect_to_metadata_address_is_refused_on_the_hop(
    server: FetchTestServer, make_fetcher: Callable
) -> None:
    fetcher, resolver = make_fetcher()
    refused = rejection(fetcher, f"http://127.0.0.1:{server.port}/to-metadata")
    assert refused.reason is RejectReason.BLOCKED_ADDRESS
    assert refused.url == "http://metadata.test/latest/"
    assert "metadata.test" in resolver.calls
    counts = fetcher.counters()
    assert counts["connections"] == 1  # the loopback server only
    assert counts["requests"] == 1
    assert counts["blocked"] == 1


# -- address policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://metadata.test/latest/meta-data/",
        "http://private10.test/img",
        "http://private192.test/img",
        "http://cgnat.test/img",
        "http://loop6.test/img",
        "http://ec2v6.test/img",
        "http://mapped.test/img",
        "http://mixed.test/img",  # one bad address is enough
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/img",
        "http://[fe80::1]/img",
        "http://[::ffff:169.254.169.254]/img",
        "http://[64:ff9b::a9fe:a9fe]/img",
        "http://0.0.0.0/img",
        "http://224.0.0.1/img",
        "http://metadata.google.internal/computeMetadata/v1/",
    ],
)
def test_blocked_addresses_are_refused_before_connecting(make_fetcher: Callable, url: str) -> None:
    fetcher, _ = make_fetcher()
    refused = rejection(fetcher, url)
    assert refused.reason is RejectReason.BLOCKED_ADDRESS
    counts = fetcher.counters()
    assert counts["connections"] == 0
    assert counts["requests"] == 0
    assert counts["blocked"] == 1


def test_metadata_hostname_is_refused_without_resolving(make_fetcher: Callable) -> None:
    fetcher, resolver = make_fetcher()
    assert rejection(fetcher, "http://metadata.google.internal./").reason is (
        RejectReason.BLOCKED_ADDRESS
    )
    assert resolver.calls == []


def test_loopback_is_refused_unless_allowed(
    server: FetchTestServer, make_fetcher: Callable
) -> None:
    strict, _ = make_fetcher(allowed_networks=())
    before = server.state.hits["/img"]
    for url in (f"http://127.0.0.1:{server.port}/img", f"http://demo.test:{server.port}/img"):
        assert rejection(strict, url).reason is RejectReason.BLOCKED_ADDRESS
    assert strict.counters()["connections"] == 0
    assert server.state.hits["/img"] == before


def test_default_resolver_result_is_vetted_too(server: FetchTestServer) -> None:
    # The system resolver parses these numerically (no DNS query); both mean 127.0.0.1.
    with Fetcher(FetchConfig()) as fetcher:
        for url in (f"http://2130706433:{server.port}/img", f"http://localhost:{server.port}/"):
            with pytest.raises(FetchRejected) as info:
                fetcher.fetch(url)
            assert info.value.reason is RejectReason.BLOCKED_ADDRESS
        assert fetcher.counters()["connections"] == 0


def test_metadata_stays_blocked_even_inside_allowed_networks() -> None:
    policy = AddressPolicy(("169.254.0.0/16", "127.0.0.0/8"))
    with pytest.raises(AddressBlocked):
        policy.resolve("metadata.test", 80, lambda host, port: ["169.254.169.254"])
    assert [str(a) for a in policy.resolve("x.test", 80, lambda h, p: ["169.254.1.1"])] == [
        "169.254.1.1"
    ]


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("172.32.0.1", False),
        ("100.64.0.1", True),
        ("127.8.8.8", True),
        ("169.254.1.1", True),
        ("224.0.0.251", True),
        ("240.0.0.1", True),
        ("0.0.0.0", True),
        ("::", True),
        ("fc00::1", True),
        ("fe80::1", True),
        ("ff02::1", True),
        ("::ffff:192.168.0.1", True),
        ("::ffff:8.8.8.8", False),
        ("2002:0a00:0001::", True),  # 6to4 of 10.0.0.1
        ("168.63.129.16", True),  # Azure WireServer, a public address
    ],
)
def test_address_block_list(address: str, blocked: bool) -> None:
    import ipaddress

    assert (why_blocked(ipaddress.ip_address(address)) is not None) is blocked


def test_dns_failure(make_fetcher: Callable) -> None:
    fetcher, _ = make_fetcher()
    assert rejection(fetcher, "http://nowhere.test/img").reason is RejectReason.DNS_FAILURE
    assert fetcher.counters()["connections"] == 0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.test/a.jpg", RejectReason.UNSUPPORTED_SCHEME),
        ("file:///etc/passwd", RejectReason.UNSUPPORTED_SCHEME),
        ("gopher://127.0.0.1:6379/_", RejectReason.UNSUPPORTED_SCHEME),
        ("http://", RejectReason.INVALID_URL),
        ("http://demo.test:99999/", RejectReason.INVALID_URL),
        ("//demo.test/img", RejectReason.INVALID_URL),
        ("not a url", RejectReason.INVALID_URL),
    ],
)
def test_unfetchable_urls(make_fetcher: Callable, url: str, reason: RejectReason) -> None:
    fetcher, resolver = make_fetcher()
    assert rejection(fetcher, url).reason is reason
    assert resolver.calls == []


def test_url_with_spaces_and_unicode_is_quoted() -> None:
    target = parse_target("http://Demo.TEST:8080/a b/ü.jpg?q=x y")
    assert target.host == "demo.test"
    assert target.path == "/a%20b/%C3%BC.jpg?q=x%20y"
    assert target.host_header == "demo.test:8080"
    assert parse_target("https://bücher.test/").host == "xn--bcher-kva.test"
    assert parse_target("https://bücher.test:443/").host_header == "xn--bcher-kva.test"
    assert parse_target("http://[::1]:8080/").host_header == "[::1]:8080"
    assert parse_target("http://demo.test/a#frag").url == "http://demo.test/a"


# -- bytes -----------------------------------------------------------------------------------------


def test_huge_body_without_length_is_cut_off_early(
    server: FetchTestServer, make_fetcher: Callable
) -> None:
    fetcher, _ = make_fetcher(max_bytes=1_000_000)
    refused = rejection(fetcher, f"http://127.0.0.1:{server.port}/huge?id=h", accept="image")
    assert refused.reason is RejectReason.TOO_MANY_BYTES
    assert fetcher.counters()["bytes"] <= 1_000_000 + 65536
    deadline = time.monotonic() + 5
    while "h" not in server.state.huge_sent and time.monotonic() < deadline:
        time.sleep(0.02)
    # The server stopped when we hung up: far less than the 200 MB it had to send.
    assert server.state.huge_sent["h"] < 40 * 1024 * 1024


def test_content_length_over_limit_is_refused_before_reading(
    server: FetchTestServer, make_fetcher: Callable
) -> None:
    fetcher, _ = make_fetcher(max_bytes=1_000_000)
    refused = rejection(fetcher, f"http://127.0.0.1:{server.port}/lying-big", accept="image")
    assert refused.reason is RejectReason.TOO_MANY_BYTES
    assert "Content-Length" in refused.detail
    assert fetcher.counters()["bytes"] == 0


def test_lying_short_content_length_reads_no_more_than_declared(
    server: FetchTestServer, make_fetcher: Callable
) -> None:
    fetcher, _ = make_fetcher(max_bytes=1_000_000)
    response = fetcher.fetch(f"http://127.0.0.1:{server.port}/lying-small", accept="image")
    assert response.body == PNG[:10]


def test_truncated_body_is_a_connection_error(
    server: FetchTestServer, make_fetcher: Callable
) -> None:
    fetcher, _ = make_fetcher(retries=0)
    refused = rejection(fetcher, f"http://127.0.0.1:{server.port}/truncated", accept="image")
    assert refused.reason is RejectReason.CONNECTION_ERROR


def test_gzip_bomb_is_counted_after_decoding(
    server: FetchTestServer, make_fetcher: Callable
) -> None:
    fetcher, _ = make_fetcher(max_bytes=1_000_000)
    refused = rejection(fetcher, f"http://127.0.0.1:{server.port}/gzip-bomb", accept="image")
    assert refused.reason is RejectReason.TOO_MANY_BYTES


# -- content type and opt-outs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "accept"),
    [("/text", "image"), ("/page", "image"), ("/img", "page"), ("/text", "page")],
)
def test_wrong_content_type(
    server: FetchTestServer, make_fetcher: Callable, path: str, accept: str
) -> None:
    fetcher, _ = make_fetcher()
    refused = rejection(fetcher, f"http://127.0.0.1:{server.port}{path}", accept=accept)
    assert refused.reason is RejectReason.WRONG_CONTENT_TYPE
    assert fetcher.counters()["bytes"] == 0  # refused on the headers, body never read


@pytest.mark.parametrize(
    ("values", "opted_out"),
    [
        (["noai"], True),
        (["noimageai"], True),
        (["noindex"], True),
        (["NoImageIndex, nofollow"], True),
        (["lait: noai"], True),
        (["otherbot: noai"], False),
        (["otherbot: noai", "nofollow"], False),
        (["otherbot: noindex, lait: noimageai"], True),
        (["unavailable_after: 25 Jun 2010 15:00:00 PST"], False),
        (["nofollow", "noarchive"], False),
    ],
)
def test_x_robots_tag(
    server: FetchTestServer, make_fetcher: Callable, values: list[str], opted_out: bool
) -> None:
    fetcher, _ = make_fetcher()
    query = "&".join(f"v={v}" for v in values).replace(" ", "%20").replace(",", "%2C")
    url = f"http://127.0.0.1:{server.port}/xrobots?{query}"
    if opted_out:
        assert rejection(fetcher, url, "image").reason is RejectReason.X_ROBOTS_TAG_OPT_OUT
        assert fetcher.counters()["x_robots_opt_out"] == 1
    else:
        assert fetcher.fetch(url, accept="image").body == PNG


def test_x_robots_tag_can_be_ignored(server: FetchTestServer, make_fetcher: Callable) -> None:
    fetcher, _ = make_fetcher(respect_x_robots_tag=False)
    assert fetcher.fetch(f"http://127.0.0.1:{server.port}/xrobots?v=noai").body == PNG


def test_x_robots_parser_matches_img2dataset_for_simple_forms() -> None:
    directives = ("noai", "noimageai", "noindex", "noimageindex")
    assert x_robots_opt_out(["otherbot: noai"], "lait", directives) is None
    assert x_robots_opt_out(["lait: noai"], "lait", directives) == "lait: noai"
    assert x_robots_opt_out(["noai, noindex"], "lait", directives) == "noai"


def test_robots_txt_disallow_and_cache(server: FetchTestServer, make_fetcher: Callable) -> None:
    fetcher, _ = make_fetcher(respect_robots_txt=True)
    base = f"http://robots.test:{server.port}"
    refused = rejection(fetcher, f"{base}/private/img", "image")
    assert refused.reason is RejectReason.ROBOTS_TXT_DISALLOWED
    assert fetcher.fetch(f"{base}/img", accept="image").body == PNG
    assert rejection(fetcher, f"{base}/private/img?id=2").reason is (
        RejectReason.ROBOTS_TXT_DISALLOWED
    )
    assert server.state.hits["robots:robots.test"] == 1  # fetched once, then cached
    counts = fetcher.counters()
    assert counts["robots_disallowed"] == 2
    assert counts["robots_txt_fetches"] == 1


@pytest.mark.parametrize("host", ["norobots.test", "brokenrobots.test"])
def test_missing_or_failing_robots_txt_allows(
    server: FetchTestServer, make_fetcher: Callable, host: str
) -> None:
    fetcher, _ = make_fetcher(respect_robots_txt=True, retries=0)
    response = fetcher.fetch(f"http://{host}:{server.port}/private/img", accept="image")
    assert response.body == PNG
    assert fetcher.counters()["robots_txt_unavailable"] == 1


def test_robots_txt_is_ignored_unless_asked(
    server: FetchTestServer, make_fetcher: Callable
) -> None:
    fetcher, _ = make_fetcher()
    assert fetcher.fetch(f"http://robots.test:{server.port}/private/img").body == PNG
    assert fetcher.counters()["robots_txt_fetches"] == 0


def test_robots_txt_loaded_once_under_concurrency(
    server: FetchTestServer, make_fetcher: Callable
) -> None:
    fetcher, _ = make_fetcher(respect_robots_txt=True)
    url = f"http://norobots.test:{server.port}/img"
    threads = [threading.Thread(target=fetcher.fetch, args=(url,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fetcher.counters()["robots_txt_fetches"] == 1
    assert fetcher.counters()["fetched"] == 8


# -- politeness ------------------------------------------------------------------------------------


def test_per_domain_concurrency_is_capped(server: FetchTestServer, make_fetcher: Callable) -> None:
    fetcher, _ = make_fetcher(per_domain_concurrency=2)
    url = f"http://127.0.0.1:{server.port}/concurrent?id=cap"
    threads = [threading.Thread(target=fetcher.fetch, args=(url,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fetcher.counters()["fetched"] == 6
    assert server.state.max_in_flight["cap"] == 2


def test_per_domain_min_interval(server: FetchTestServer, make_fetcher: Callable) -> None:
    fetcher, _ = make_fetcher(per_domain_min_interval_s=0.2)
    started = time.monotonic()
    for _ in range(3):
        fetcher.fetch(f"http://demo.test:{server.port}/concurrent?id=interval")
    assert time.monotonic() - started >= 0.39


def test_config_rejects_bad_networks() -> None:
    with pytest.raises(ValueError, match="CIDR"):
        FetchConfig(allowed_networks=("localhost",))


def test_rejection_survives_pickling() -> None:
    import pickle

    original = FetchRejected(RejectReason.TIMEOUT, "slow", "http://x.test/")
    copy = pickle.loads(pickle.dumps(original))
    assert (copy.reason, copy.detail, copy.url) == (original.reason, original.detail, original.url)
