"""The one typed configuration object of the safe fetcher."""

from __future__ import annotations

import dataclasses
import ipaddress

DEFAULT_USER_AGENT = "LAIT/0.1 (image-text dataset builder; +https://github.com/lait-project/lait)"

# img2dataset's default `disallowed_header_directives`: any of these in an X-Robots-Tag
# header aimed at us (or at every agent) means "do not put this in a dataset".
DEFAULT_OPT_OUT_DIRECTIVES: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
# In a page's <meta name="robots">: the directives about its images (see
# `pipeline.extract.page_policy`); noindex / none there are about listing the page itself.
DEFAULT_META_OPT_OUT_DIRECTIVES: tuple[str, ...] = ("noai", "noimageai", "noimageindex")


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
        per_domain_concurrency: the most requests in flight to one host at once, per
            `Fetcher` (the ceiling of the adaptive limit; the fixed limit when
            `adaptive_concurrency` is off). Job-wide a host never sees more than
            `max_workers_per_host` x this.
        adaptive_concurrency: let each host's limit move between 1 and
            `per_domain_concurrency` (`pipeline.fetch.adaptive`): up by one per window of
            fast answers while the window is full, halved on a 429, a 5xx, a timeout, a
            connection error or an answer slower than `slow_response_s`; a Retry-After (up to
            `max_retry_after_s`) pauses the host's new requests that long.
        initial_per_domain_concurrency: where the adaptive limit starts (capped by the
            ceiling).
        slow_response_s: an answer slower than this counts as the host being overloaded.
        per_domain_min_interval_s: least time between request starts to one host.
        max_pages_per_site: a crawl queues at most this many pages of one site (scheme, host,
            port) in one job, seeds included; links past it are counted, not fetched.
        max_workers_per_host: job-wide, the most workers that fetch from one host at once
            (the graph keys fetches by (host, one of this many splits); see `politeness_key`).
        max_images_per_page: a page's first this many distinct image URLs are taken; the
            candidates of the rest are rejected as `over_page_cap` (`pipeline.extract.
            page_policy`).
        respect_meta_robots: a page whose `<meta name="robots">` (or `<meta name="lait">`,
            our user agent's token) holds one of `meta_robots_opt_out_directives` gives all
            its candidates rejected as `meta_robots_opt_out`.
        meta_robots_opt_out_directives: noai, noimageai, noimageindex by default (noindex
            and none are about listing the page in search, not about its images).
        max_fetches_per_host: job-wide, the most image URLs fetched from one host; the
            rest are rejected as `over_host_budget`. Which URLs are fetched is fixed by a
            hash of the URL, so every run of the job picks the same ones. None: no cap.
        max_seconds_per_host: job-wide, the fetch time one host gets, summed over its
            splits (each of the `max_workers_per_host` splits gets its share); URLs left
            when a split's share is spent are rejected as `over_host_budget`. None: no cap.
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
    per_domain_concurrency: int = 8
    adaptive_concurrency: bool = True
    initial_per_domain_concurrency: int = 4
    slow_response_s: float = 2.0
    per_domain_min_interval_s: float = 0.0
    max_workers_per_host: int = 4
    max_pages_per_site: int = 10_000
    max_images_per_page: int = 1000
    respect_meta_robots: bool = True
    meta_robots_opt_out_directives: tuple[str, ...] = DEFAULT_META_OPT_OUT_DIRECTIVES
    max_fetches_per_host: int | None = 100_000
    max_seconds_per_host: float | None = 3600.0
    ca_certs: str | None = None
    max_pools: int = 256

    def __post_init__(self) -> None:
        if self.connect_timeout_s <= 0 or self.total_timeout_s <= 0:
            raise ValueError("FetchConfig: timeouts must be positive seconds")
        if self.max_bytes <= 0:
            raise ValueError("FetchConfig: max_bytes must be positive")
        if self.max_redirects < 0 or self.retries < 0 or self.backoff_s < 0:
            raise ValueError("FetchConfig: max_redirects, retries and backoff_s must be >= 0")
        if self.per_domain_concurrency < 1 or self.initial_per_domain_concurrency < 1:
            raise ValueError(
                "FetchConfig: per_domain_concurrency and initial_per_domain_concurrency "
                "must be at least 1"
            )
        if self.slow_response_s <= 0:
            raise ValueError("FetchConfig: slow_response_s must be positive seconds")
        if self.max_images_per_page < 1:
            raise ValueError("FetchConfig: max_images_per_page must be at least 1")
        if self.max_fetches_per_host is not None and self.max_fetches_per_host < 1:
            raise ValueError("FetchConfig: max_fetches_per_host must be at least 1 (or null)")
        if self.max_seconds_per_host is not None and self.max_seconds_per_host <= 0:
            raise ValueError("FetchConfig: max_seconds_per_host must be positive (or null)")
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
