"""The one typed configuration object of the safe fetcher."""

from __future__ import annotations

import dataclasses
import ipaddress

DEFAULT_USER_AGENT = "LAIT/0.1 (image-text dataset builder; +https://github.com/lait-project/lait)"

# img2dataset's default `disallowed_header_directives`: any of these in an X-Robots-Tag
# header aimed at us (or at every agent) means "do not put this in a dataset".
DEFAULT_OPT_OUT_DIRECTIVES: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")


@dataclasses.dataclass(frozen=True)
class FetchConfig:
    """Limits and policy for `Fetcher`. Every limit applies per request unless it says otherwise.

    Attributes:
        connect_timeout_s: seconds to open the TCP (and TLS) connection.
        total_timeout_s: seconds for one HTTP exchange, from connect to the last body byte.
            Each redirect hop and each retry gets a fresh budget.
        max_bytes: the largest body accepted (counted while streaming, after content
            decoding, so a gzip bomb is cut off too).
        max_redirects: redirects followed before `TOO_MANY_REDIRECTS`.
        retries: extra attempts after a timeout, a connection error, a 429 or a 5xx.
        backoff_s: the first retry waits this long, then 2x, 4x, ...
        max_retry_after_s: the longest `Retry-After` we honour; a server asking for more is
            given up on at once rather than hammered sooner than it asked.
        user_agent: sent on every request; its first token (before "/") is the name matched
            in robots.txt groups and in "name: directive" X-Robots-Tag headers.
        allowed_networks: CIDRs exempt from the address block list (the demo and the tests
            pass ("127.0.0.1/32",)). Cloud-metadata endpoints stay blocked regardless.
        respect_x_robots_tag: refuse responses whose X-Robots-Tag holds an opt-out directive.
        x_robots_opt_out_directives: the directives that count as an opt-out.
        respect_robots_txt: consult (and cache) each host's robots.txt before fetching.
        robots_cache_size: hosts whose robots.txt is kept (least recently used evicted), per
            worker process (shared by its fetchers).
        dns_cache_ttl_s: how long a DNS answer is reused, per worker process (shared by its
            fetchers; 0 asks DNS on every hop). Addresses are vetted on every hop either way.
        dns_cache_size: host names whose answers are kept (least recently used evicted).
        robots_max_bytes: robots.txt bodies are cut at this size (Google reads 500 KiB).
        per_domain_concurrency: requests in flight to one host at once, per `Fetcher`.
        per_domain_min_interval_s: least time between request starts to one host.
        max_pages_per_site: a crawl queues at most this many pages of one site (scheme, host,
            port) in one job, seeds included; links past it are counted, not fetched.
        max_workers_per_host: job-wide, the most workers that fetch from one host at once
            (the graph keys fetches by (host, one of this many splits); see `politeness_key`).
        ca_certs: a CA bundle for HTTPS; None uses the system trust store.
        max_pools: connection pools kept open (one per host and vetted address).
    """

    connect_timeout_s: float = 5.0
    total_timeout_s: float = 15.0
    max_bytes: int = 20_000_000
    max_redirects: int = 5
    retries: int = 2
    backoff_s: float = 0.5
    max_retry_after_s: float = 10.0
    user_agent: str = DEFAULT_USER_AGENT
    allowed_networks: tuple[str, ...] = ()
    respect_x_robots_tag: bool = True
    x_robots_opt_out_directives: tuple[str, ...] = DEFAULT_OPT_OUT_DIRECTIVES
    respect_robots_txt: bool = False
    robots_cache_size: int = 10_000
    robots_max_bytes: int = 512_000
    dns_cache_ttl_s: float = 300.0
    dns_cache_size: int = 100_000
    per_domain_concurrency: int = 4
    per_domain_min_interval_s: float = 0.0
    max_workers_per_host: int = 4
    max_pages_per_site: int = 10_000
    ca_certs: str | None = None
    max_pools: int = 256

    def __post_init__(self) -> None:
        if self.connect_timeout_s <= 0 or self.total_timeout_s <= 0:
            raise ValueError("FetchConfig: timeouts must be positive seconds")
        if self.max_bytes <= 0:
            raise ValueError("FetchConfig: max_bytes must be positive")
        if self.max_redirects < 0 or self.retries < 0 or self.backoff_s < 0:
            raise ValueError("FetchConfig: max_redirects, retries and backoff_s must be >= 0")
        if self.per_domain_concurrency < 1:
            raise ValueError("FetchConfig: per_domain_concurrency must be at least 1")
        if self.dns_cache_ttl_s < 0 or self.dns_cache_size < 1:
            raise ValueError("FetchConfig: dns_cache_ttl_s must be >= 0, dns_cache_size >= 1")
        if self.max_pages_per_site < 1:
            raise ValueError("FetchConfig: max_pages_per_site must be at least 1")
        if self.max_workers_per_host < 1:
            raise ValueError("FetchConfig: max_workers_per_host must be at least 1")
        if self.per_domain_min_interval_s < 0:
            raise ValueError("FetchConfig: per_domain_min_interval_s must be >= 0")
        if not self.user_agent.strip():
            raise ValueError("FetchConfig: user_agent must not be empty")
        for cidr in self.allowed_networks:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as err:
                raise ValueError(
                    f"FetchConfig: allowed_networks entry {cidr!r} is not a CIDR "
                    "(write e.g. '127.0.0.1/32')"
                ) from err

    @property
    def user_agent_token(self) -> str:
        """The product token of `user_agent`, lower-cased ("lait")."""
        return self.user_agent.split("/", 1)[0].split()[0].strip().lower()
