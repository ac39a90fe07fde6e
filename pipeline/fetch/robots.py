"""Opt-outs: the X-Robots-Tag response header and (when asked) robots.txt.

X-Robots-Tag follows img2dataset's `is_disallowed`: a header value is either
"directive, directive" (for every agent) or "agent: directive, ..." (for that agent only);
it is an opt-out when it applies to us and names one of the opt-out directives
(img2dataset's default: noai, noimageai, noindex, noimageindex). One header may also
switch agents part-way ("otherbot: noindex, lait: noai"), which img2dataset does not read.

robots.txt is fetched once per (scheme, host, port) and worker process (the cache is shared
by every fetcher of the process, `pipeline.fetch.shared`) through the fetcher's own safe path,
parsed with Protego (Scrapy's parser: RFC 9309 groups, `*` and `$` wildcards, longest-match
Allow/Disallow, Crawl-delay), and cached (bounded LRU, thread-safe, one load per origin
even when many threads ask at once). A missing robots.txt (any 4xx) allows everything, as
RFC 9309 says. A 5xx or an unreachable robots.txt also allows everything: RFC 9309 would
have us assume "disallow all", but the page itself is fetched through the same path and
fails on its own if the host is really down, and a flaky robots.txt should not silently
drop a host that did not opt out. The choice lives in `Fetcher._load_robots_txt`: a loader
returning None means "allow all".

Wildcards follow Google's and RFC 9309's reading, which Protego implements: rules match
the path *and query*, so `Disallow: /*.jpg$` blocks `/b.jpg` and `/c/b.jpg` but not
`/b.jpg?x=1`. `urllib.robotparser` (used before) reads `*` and `$` literally, so that rule
blocked nothing. The group for our product token wins over `User-agent: *`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

from protego import Protego

from pipeline.fetch.urls import InvalidUrl, Target, UnsupportedScheme, parse_target

# Directives whose *value* follows a colon, so "name:" is not an agent prefix for them.
_VALUED_DIRECTIVES = frozenset(
    {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}
)


def x_robots_opt_out(
    header_values: Iterable[str], agent_token: str, opt_out_directives: Iterable[str]
) -> str | None:
    """The first opt-out directive in these X-Robots-Tag values that applies to us, or None.

    `agent_token` is our lower-cased product token ("lait"); a directive scoped to another
    agent ("otherbot: noai") does not apply to us.
    """
    wanted = {d.strip().lower() for d in opt_out_directives}
    token = agent_token.lower()
    for value in header_values:
        scope: str | None = None
        for raw_part in value.split(","):
            part = raw_part.strip().lower()
            if not part:
                continue
            name, colon, rest = part.partition(":")
            if colon and name.strip() not in _VALUED_DIRECTIVES:
                scope = name.strip()
                part = rest.strip()
            if (scope is None or scope == token) and part in wanted:
                return part if scope is None else f"{scope}: {part}"
    return None


RobotsLoader = Callable[[Target], str | None]
"""Fetches an origin's robots.txt; returns its text, or None to allow everything."""


class RobotsCache:
    """robots.txt rules per origin, loaded on first use with `loader`.

    The loader may instead come with each call (`allows(target, loader)`): a cache shared by
    several fetchers (`pipeline.fetch.shared`) loads through whichever fetcher asks first.
    """

    def __init__(self, loader: RobotsLoader | None, user_agent: str, max_entries: int) -> None:
        self._loader = loader
        self._user_agent = user_agent
        self._max_entries = max_entries
        self._parsers: OrderedDict[tuple[str, str, int], Protego] = OrderedDict()
        self._loading: dict[tuple[str, str, int], threading.Lock] = {}
        self._lock = threading.Lock()

    def allows(self, target: Target, loader: RobotsLoader | None = None) -> bool:
        """Whether robots.txt of `target`'s origin lets our user agent fetch `target`."""
        return bool(self._parser_for(target, loader).can_fetch(target.url, self._user_agent))

    def crawl_delay(self, target: Target, loader: RobotsLoader | None = None) -> float | None:
        """The Crawl-delay (seconds) robots.txt of `target`'s origin asks of us, if any."""
        delay = self._parser_for(target, loader).crawl_delay(self._user_agent)
        return None if delay is None else float(delay)

    def _parser_for(self, target: Target, loader: RobotsLoader | None) -> Protego:
        key = target.origin
        with self._lock:
            cached = self._lookup(key)
            if cached is not None:
                return cached
            origin_lock = self._loading.setdefault(key, threading.Lock())
        with origin_lock:  # one load per origin; other threads wait for it
            with self._lock:
                cached = self._lookup(key)
                if cached is not None:
                    return cached
            parser = self._load(target, loader or self._loader)
            with self._lock:
                self._parsers[key] = parser
                while len(self._parsers) > self._max_entries:
                    self._parsers.popitem(last=False)
                self._loading.pop(key, None)
            return parser

    def prime(self, target: Target, text: str | None) -> None:
        """Hold the rules `text` (None: allow all) for `target`'s origin, fetched elsewhere
        (the job's robots.txt pre-pass), so no fetcher here loads them again."""
        parser = Protego.parse(text or "")
        with self._lock:
            self._parsers[target.origin] = parser
            self._parsers.move_to_end(target.origin)
            while len(self._parsers) > self._max_entries:
                self._parsers.popitem(last=False)

    def _lookup(self, key: tuple[str, str, int]) -> Protego | None:
        parser = self._parsers.get(key)
        if parser is not None:
            self._parsers.move_to_end(key)
        return parser

    def _load(self, target: Target, loader: RobotsLoader | None) -> Protego:
        if loader is None:
            raise ValueError("RobotsCache: no loader given (pass one to the cache or the call)")
        text = loader(robots_target(target))
        # No rules (text None) parse to a parser that allows everything.
        return Protego.parse(text or "")


def robots_target(target: Target) -> Target:
    """The robots.txt URL of `target`'s origin."""
    base = target.url.split("/", 3)
    return Target(
        url=f"{base[0]}//{base[2]}/robots.txt",
        scheme=target.scheme,
        host=target.host,
        port=target.port,
        path="/robots.txt",
        host_header=target.host_header,
    )


def robots_url_of(url: str) -> str | None:
    """The robots.txt URL of `url`'s origin; None when `url` cannot be fetched at all."""
    try:
        return robots_target(parse_target(url)).url
    except (InvalidUrl, UnsupportedScheme):
        return None
