"""Canonical URLs: one spelling per resource, so keys and URL dedupe agree."""

from __future__ import annotations

import pytest

from lait.record import CaptionSource, Status, record_key
from lait.urls import InvalidUrlError, resolve_http_url
from pipeline.crawl import seed_of, site_of
from pipeline.extract import canonical_url, extract_candidates, extract_links
from pipeline.fetch.urls import parse_target
from pipeline.sources.lists import list_record

CANONICAL_FORMS = [
    # scheme and host case, default ports, trailing dot
    ("HTTP://A.com:80/x", "http://a.com/x"),
    ("https://WWW.Example.COM:443/Img.JPG", "https://www.example.com/Img.JPG"),  # path case kept
    ("http://a.com:8080/x", "http://a.com:8080/x"),
    ("http://a.com:08080/x", "http://a.com:8080/x"),
    ("https://a.com:80/x", "https://a.com:80/x"),  # 80 is not https's default
    ("http://A.COM./x", "http://a.com/x"),
    ("http://a.com", "http://a.com/"),
    ("http://[::1]:80/a", "http://[::1]/a"),
    ("http://[::1]:8080/a", "http://[::1]:8080/a"),
    # percent-encoding: hex upper-cased, unreserved decoded, reserved kept, raw text escaped
    ("http://a.com/%7euser/%41.jpg", "http://a.com/~user/A.jpg"),
    ("http://a.com/a%2fb%2F.jpg", "http://a.com/a%2Fb%2F.jpg"),
    ("http://a.com/a b.jpg", "http://a.com/a%20b.jpg"),
    ("http://a.com/ü.jpg", "http://a.com/%C3%BC.jpg"),
    ("http://a.com/%c3%bc.jpg", "http://a.com/%C3%BC.jpg"),
    ("http://a.com/r%e9sum%e9.jpg", "http://a.com/r%E9sum%E9.jpg"),  # Latin-1 bytes kept
    ("http://a.com/100%.jpg", "http://a.com/100%25.jpg"),
    ("http://a.com/x.jpg?q=%3d%26&r=%7e", "http://a.com/x.jpg?q=%3D%26&r=~"),
    # fragments never reach the server
    ("http://a.com/x.jpg#top", "http://a.com/x.jpg"),
    ("http://a.com/x.jpg?v=2#a", "http://a.com/x.jpg?v=2"),
    # dot segments resolved; repeated slashes and the query's order and form kept
    ("http://a.com/a/./b/../c.jpg", "http://a.com/a/c.jpg"),
    ("http://a.com/../../c.jpg", "http://a.com/c.jpg"),
    ("http://a.com//cdn//c.jpg", "http://a.com//cdn//c.jpg"),
    ("http://a.com/x?b=2&a=1", "http://a.com/x?b=2&a=1"),
    ("http://a.com/x?a&&b=+", "http://a.com/x?a&&b=+"),
    # IDN hosts to their IDNA 2008 ASCII form
    ("http://Bücher.de/bild.jpg", "http://xn--bcher-kva.de/bild.jpg"),
    ("http://XN--BCHER-KVA.de/bild.jpg", "http://xn--bcher-kva.de/bild.jpg"),
    ("http://ドメイン.テスト/画像.jpg", "http://xn--eckwd4c7c.xn--zckzah/%E7%94%BB%E5%83%8F.jpg"),
]


@pytest.mark.parametrize(("spelling", "canonical"), CANONICAL_FORMS)
def test_canonical_forms(spelling: str, canonical: str) -> None:
    assert canonical_url(spelling) == canonical
    assert canonical_url(canonical) == canonical  # idempotent


@pytest.mark.parametrize(("spelling", "canonical"), CANONICAL_FORMS)
def test_the_fetcher_sends_the_canonical_url_unchanged(spelling: str, canonical: str) -> None:
    # What we key on is what we fetch, and what the address checks see.
    assert parse_target(canonical).url == canonical


def test_relative_urls_resolve_then_canonicalise() -> None:
    assert resolve_http_url("../Img/%7ea.jpg#x", "HTTP://Site.example:80/a/b/") == (
        "http://site.example/a/Img/~a.jpg"
    )


@pytest.mark.parametrize("bad", ["http://a..b/x.jpg", "http://.a.com/x.jpg"])
def test_hosts_with_empty_labels_are_invalid(bad: str) -> None:
    with pytest.raises(InvalidUrlError, match="empty label"):
        canonical_url(bad)


PAGE = b"""<html><body>
<img src="HTTP://Img.Example:80/cat.jpg" alt="a cat on a mat">
<img src="http://img.example/%63at.jpg#zoom" alt="a cat on a mat">
<img src="//img.example/./cat.jpg" alt="a cat on a mat">
<img src="http://img.example/cat.jpg?b=1&a=2" alt="a cat on a mat">
<img src="http://img.example/cat.jpg?a=2&b=1" alt="a cat on a mat">
<a href="HTTP://Site.Example:80/next#part">next</a><a href="/next">again</a>
</body></html>"""


def test_two_spellings_of_one_image_on_a_page_give_one_key() -> None:
    records = extract_candidates(PAGE, "http://site.example/", source="t")
    assert all(r.status is Status.CANDIDATE for r in records)
    urls = [r.url for r in records]
    # Three spellings of cat.jpg collapse; two query orders stay two URLs.
    assert urls == [
        "http://img.example/cat.jpg",
        "http://img.example/cat.jpg?b=1&a=2",
        "http://img.example/cat.jpg?a=2&b=1",
    ]
    assert records[0].key == record_key("http://img.example/cat.jpg", "a cat on a mat")
    assert len({r.key for r in records}) == 3


def test_links_are_canonical_and_listed_once() -> None:
    assert extract_links(PAGE, "http://site.example/") == ["http://site.example/next"]


def test_list_rows_get_the_same_key_as_page_images() -> None:
    row = list_record(source="t", url="http://IMG.example:80/cat.jpg#x", caption="a cat on a mat")
    page = extract_candidates(PAGE, "http://site.example/", source="t")[0]
    assert row.caption_source is CaptionSource.LIST
    assert (row.url, row.key) == (page.url, page.key)


def test_seeds_take_the_form_their_links_have() -> None:
    seed_site, seed = seed_of("HTTP://Site.Example:80/next#top")
    assert seed == extract_links(PAGE, "http://site.example/")[0]
    assert seed_site == site_of(seed) == "http://site.example"
    assert seed_of(" ftp://x.example/a ") == ("ftp://x.example", "ftp://x.example/a")
