"""robots.txt rules as Protego reads them: wildcards, `$`, agent groups, Crawl-delay."""

from __future__ import annotations

import pytest

from pipeline.fetch.config import DEFAULT_USER_AGENT
from pipeline.fetch.robots import RobotsCache, robots_target
from pipeline.fetch.urls import Target, parse_target

WILDCARDS = """\
User-agent: *
Disallow: /*.jpg$
Disallow: /tmp*/cache
Allow: /private/open
Disallow: /private
Crawl-delay: 2
"""


def cache_for(text: str | None, seen: list[str] | None = None) -> RobotsCache:
    def loader(robots: Target) -> str | None:
        if seen is not None:
            seen.append(robots.url)
        return text

    return RobotsCache(loader, DEFAULT_USER_AGENT, max_entries=4)


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/b.jpg", False),  # `$` anchors at the end of path + query
        ("/c/d/b.jpg", False),  # `*` spans slashes
        ("/b.jpg?x=1", True),  # the query is part of what `$` must end
        ("/b.jpgx", True),
        ("/b.png", True),
        ("/tmp42/cache/x.png", False),
        ("/private/secret.png", False),
        ("/private/open/ok.png", True),  # longest match wins: Allow beats Disallow here
        ("/", True),
    ],
)
def test_wildcards_and_end_anchor(path: str, allowed: bool) -> None:
    cache = cache_for(WILDCARDS)
    assert cache.allows(parse_target(f"http://h.example{path}")) is allowed


def test_our_group_replaces_the_star_group() -> None:
    text = (
        "User-agent: *\nDisallow: /\n\n"
        "User-agent: lait\nDisallow: /nolait/\nCrawl-delay: 5\n\n"
        "User-agent: otherbot\nDisallow: /x\n"
    )
    cache = cache_for(text)
    # Matched by our product token in the full User-Agent string, case-insensitively.
    assert cache.allows(parse_target("http://h.example/img.png"))
    assert not cache.allows(parse_target("http://h.example/nolait/img.png"))
    assert cache.crawl_delay(parse_target("http://h.example/")) == 5.0


def test_star_group_applies_when_no_group_names_us() -> None:
    cache = cache_for("User-agent: otherbot\nDisallow: /\n\nUser-agent: *\nDisallow: /p/\n")
    assert cache.allows(parse_target("http://h.example/a.png"))
    assert not cache.allows(parse_target("http://h.example/p/a.png"))
    assert cache.crawl_delay(parse_target("http://h.example/")) is None


@pytest.mark.parametrize("text", [None, "", "garbage\x00 not robots\n<html>"])
def test_missing_or_junk_robots_txt_allows_everything(text: str | None) -> None:
    cache = cache_for(text)
    assert cache.allows(parse_target("http://h.example/anything.jpg"))


def test_one_load_per_origin_and_lru_eviction() -> None:
    seen: list[str] = []
    cache = cache_for("User-agent: *\nDisallow: /*.jpg$\n", seen)
    for _ in range(3):
        assert not cache.allows(parse_target("http://h.example/a.jpg"))
    assert seen == ["http://h.example/robots.txt"]
    for i in range(5):  # five new origins push h.example out of a cache of four
        cache.allows(parse_target(f"http://h{i}.example/a.png"))
    cache.allows(parse_target("http://h.example/a.png"))
    assert seen.count("http://h.example/robots.txt") == 2
    # Port and scheme are part of the origin.
    cache.allows(parse_target("https://h.example/a.png"))
    cache.allows(parse_target("http://h.example:8080/a.png"))
    assert "https://h.example/robots.txt" in seen and "http://h.example:8080/robots.txt" in seen


def test_robots_target_keeps_the_origin() -> None:
    robots = robots_target(parse_target("http://h.example:8080/a/b.jpg?x=1"))
    assert robots.url == "http://h.example:8080/robots.txt"
    assert robots.path == "/robots.txt"
    assert robots.origin == ("http", "h.example", 8080)
