"""`Fetcher`: the one safe HTTP client for pages, images and robots.txt.

A fetch walks the redirect chain hop by hop. For every hop it:

1. parses the URL (`INVALID_URL`, `UNSUPPORTED_SCHEME`);
2. resolves the host and vets every address (`DNS_FAILURE`, `BLOCKED_ADDRESS`), before
   any socket is opened;
3. asks the host's robots.txt, when configured (`ROBOTS_TXT_DISALLOWED`);
4. sends one GET to a vetted address (pinned, see `connection.py`) inside the host's
   rate-limit slot, retrying timeouts, connection errors, 429 and 5xx with exponential
   backoff (`TIMEOUT`, `CONNECTION_ERROR`, `HTTP_*`); those failures and slow answers
   also lower the host's adaptive concurrency limit, fast answers raise it up to
   `per_domain_concurrency` (`adaptive.py`), and a Retry-After pauses the host's requests;
5. follows a redirect (`TOO_MANY_REDIRECTS`, `REDIRECT_LOOP`) or, for a 2xx, checks
   X-Robots-Tag and the content type before reading, then streams the body and counts
   it (`X_ROBOTS_TAG_OPT_OUT`, `WRONG_CONTENT_TYPE`, `TOO_MANY_BYTES`).

Use in Beam: build one `Fetcher` in `DoFn.setup` and `close` it in `DoFn.teardown`.
A `Fetcher` is thread-safe. Its connection pools, rate limiter and counters are its own;
its DNS answers and robots.txt rules come from caches shared by every fetcher of the worker
process (`shared.py`), so DoFn instances do not ask DNS or fetch robots.txt again. Nothing
is shared between processes: the job-wide limit per host is the graph's (fetches keyed by
host, `politeness_key`, at most `max_workers_per_host` at once).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal, NoReturn

from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.response import BaseHTTPResponse
from urllib3.util.timeout import Timeout

from lait.record import RejectReason
from pipeline.fetch.addresses import (
    AddressBlocked,
    AddressPolicy,
    IPAddress,
    ResolutionFailed,
    Resolver,
    default_resolver,
)
from pipeline.fetch.config import FetchConfig
from pipeline.fetch.connection import PinnedPools
from pipeline.fetch.counters import FetchCounters
from pipeline.fetch.errors import FetchRejected
from pipeline.fetch.ratelimit import DomainRateLimiter
from pipeline.fetch.response import FetchResponse
from pipeline.fetch.robots import robots_target, x_robots_opt_out
from pipeline.fetch.shared import shared_dns_cache, shared_robots_cache
from pipeline.fetch.urls import InvalidUrl, Target, UnsupportedScheme, join_location, parse_target

Accept = Literal["image", "page", "any"]

PAGE_CONTENT_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_CHUNK_BYTES = 64 * 1024
_NOT_FOUND = frozenset({404, 410})

# Counters always present in `Fetcher.counters()`, even at zero.
COUNTER_NAMES: tuple[str, ...] = (
    "fetches",
    "fetched",
    "requests",
    "connections",
    "retries",
    "redirects",
    "bytes",
    "blocked",
    "dns_lookups",
    "robots_txt_fetches",
    "robots_txt_unavailable",
    "robots_disallowed",
    "x_robots_opt_out",
)


class _Retryable(Exception):
    """A failed attempt that another attempt might fix."""

    def __init__(self, rejection: FetchRejected, retry_after_s: float | None = None) -> None:
        super().__init__(str(rejection))
        self.rejection = rejection
        self.retry_after_s = retry_after_s


class _Redirect:
    def __init__(self, location: str) -> None:
        self.location = location


class _Final:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class Fetcher:
    """Fetches http(s) URLs safely: vetted addresses only, capped bytes, time and redirects.

    Args:
        config: limits and policy.
        resolver: maps (host, port) to IP address strings; the system resolver by default.
            Tests inject one to point names at addresses without DNS. Its answers are cached
            per process (`FetchConfig.dns_cache_ttl_s`), shared with every fetcher using it.
    """

    def __init__(self, config: FetchConfig, resolver: Resolver | None = None) -> None:
        self.config = config
        self._resolver: Resolver = resolver or default_resolver
        self._policy = AddressPolicy(config.allowed_networks)
        self._counters = FetchCounters()
        for name in COUNTER_NAMES:
            self._counters.add(name, 0)
        self._pools = PinnedPools(
            connect_timeout_s=config.connect_timeout_s,
            pool_size=config.per_domain_concurrency,
            max_pools=config.max_pools,
            ca_certs=config.ca_certs,
            on_connect=lambda: self._counters.add("connections"),
        )
        self._limiter = DomainRateLimiter(
            config.per_domain_concurrency,
            config.per_domain_min_interval_s,
            adaptive=config.adaptive_concurrency,
            initial=config.initial_per_domain_concurrency,
            slow_s=config.slow_response_s,
        )
        self._dns = shared_dns_cache(self._resolver, config)
        self._robots = shared_robots_cache(config, self._resolver)
        self._base_headers = {
            "User-Agent": config.user_agent,
            "Accept-Encoding": "gzip, deflate",
        }

    def fetch(self, url: str, *, accept: Accept = "any") -> FetchResponse:
        """GET `url`, following redirects; raise `FetchRejected` with a fetch-stage reason.

        `accept` checks the final content type: "image" wants image/*, "page" wants
        text/html or application/xhtml+xml, "any" takes anything.
        """
        self._counters.add("fetches")
        started = time.monotonic()
        try:
            response = self._follow(
                url,
                accept=accept,
                started=started,
                max_bytes=self.config.max_bytes,
                truncate=False,
                honour_opt_outs=True,
            )
        except FetchRejected as rejection:
            self._count_rejection(rejection)
            raise
        self._counters.add("fetched")
        return response

    def counters(self) -> dict[str, int]:
        """A snapshot of this fetcher's counters (requests, retries, bytes, blocked, ...).

        `rejected_<reason>` counts each `FetchRejected` raised by `fetch`, by reason.
        """
        return self._counters.snapshot()

    def close(self) -> None:
        """Close every pooled connection. The fetcher may not be used afterwards."""
        self._pools.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the redirect chain ------------------------------------------------------------------

    def _follow(
        self,
        url: str,
        *,
        accept: Accept,
        started: float,
        max_bytes: int,
        truncate: bool,
        honour_opt_outs: bool,
    ) -> FetchResponse:
        redirects: list[str] = []
        seen: set[str] = set()
        current = url
        while True:
            target = _parse(current)
            if target.url in seen:
                raise FetchRejected(
                    RejectReason.REDIRECT_LOOP, f"redirected back to {target.url}", target.url
                )
            seen.add(target.url)
            addresses = self._vet(target)
            if (
                honour_opt_outs
                and self.config.respect_robots_txt
                and not self._robots.allows(target, self._load_robots_txt)
            ):
                raise FetchRejected(
                    RejectReason.ROBOTS_TXT_DISALLOWED,
                    f"robots.txt of {target.host} disallows {self.config.user_agent_token}",
                    target.url,
                )
            outcome = self._exchange_with_retries(
                target,
                addresses,
                accept=accept,
                max_bytes=max_bytes,
                truncate=truncate,
                honour_opt_outs=honour_opt_outs,
            )
            if isinstance(outcome, _Redirect):
                if len(redirects) >= self.config.max_redirects:
                    raise FetchRejected(
                        RejectReason.TOO_MANY_REDIRECTS,
                        f"more than {self.config.max_redirects} redirects",
                        target.url,
                        value=len(redirects) + 1,
                        limit=self.config.max_redirects,
                    )
                redirects.append(target.url)
                self._counters.add("redirects")
                current = join_location(target.url, outcome.location)
                continue
            headers = outcome.headers
            return FetchResponse(
                url=target.url,
                status=outcome.status,
                content_type=_media_type(headers.get("content-type", "")),
                headers=headers,
                body=outcome.body,
                redirects=tuple(redirects),
                elapsed_s=time.monotonic() - started,
            )

    def _vet(self, target: Target) -> list[IPAddress]:
        try:
            # The answer may come from the process's DNS cache; every address is vetted again
            # on every hop all the same.
            return self._policy.resolve(target.host, target.port, self._resolve_cached)
        except AddressBlocked as err:
            raise FetchRejected(RejectReason.BLOCKED_ADDRESS, str(err), target.url) from err
        except ResolutionFailed as err:
            raise FetchRejected(RejectReason.DNS_FAILURE, str(err), target.url) from err

    # -- one hop, with retries -----------------------------------------------------------------

    def _resolve_cached(self, host: str, port: int) -> list[str]:
        return self._dns.resolve(host, port, on_lookup=lambda: self._counters.add("dns_lookups"))

    def _exchange_with_retries(
        self,
        target: Target,
        addresses: Sequence[IPAddress],
        *,
        accept: Accept,
        max_bytes: int,
        truncate: bool,
        honour_opt_outs: bool,
    ) -> _Redirect | _Final:
        attempts = self.config.retries + 1
        for attempt in range(attempts):
            # Rotate through the vetted addresses, so a dead one is not retried alone.
            address = addresses[attempt % len(addresses)]
            try:
                with self._limiter.slot(target.host) as slot:
                    try:
                        return self._exchange(
                            target,
                            address,
                            accept=accept,
                            max_bytes=max_bytes,
                            truncate=truncate,
                            honour_opt_outs=honour_opt_outs,
                        )
                    except _Retryable as failure:
                        # The host is overloaded (or unreachable): its limit falls, and a
                        # Retry-After we would wait out pauses its other requests too.
                        after = failure.retry_after_s
                        honoured = after is not None and after <= self.config.max_retry_after_s
                        slot.mark_overloaded(after if honoured else None)
                        raise
            except _Retryable as failure:
                retry_after = failure.retry_after_s
                if attempt + 1 >= attempts:
                    raise failure.rejection from None
                if retry_after is not None and retry_after > self.config.max_retry_after_s:
                    raise FetchRejected(
                        failure.rejection.reason,
                        f"{failure.rejection.detail}; Retry-After {retry_after:.0f}s is over "
                        f"the {self.config.max_retry_after_s:.0f}s cap",
                        target.url,
                    ) from None
                delay = max(self.config.backoff_s * (2**attempt), retry_after or 0.0)
                self._counters.add("retries")
                time.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _exchange(
        self,
        target: Target,
        address: IPAddress,
        *,
        accept: Accept,
        max_bytes: int,
        truncate: bool,
        honour_opt_outs: bool,
    ) -> _Redirect | _Final:
        deadline = time.monotonic() + self.config.total_timeout_s
        pool = self._pools.get(target.scheme, target.host, target.port, address)
        headers = dict(self._base_headers, Host=target.host_header)
        headers["Accept"] = _accept_header(accept)
        self._counters.add("requests")
        with _translate_errors(target.url):
            response = pool.urlopen(
                "GET",
                target.path,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                release_conn=False,
                timeout=Timeout(
                    connect=self.config.connect_timeout_s,
                    read=self.config.total_timeout_s,
                    total=self.config.total_timeout_s,
                ),
            )
        with _released(response):
            return self._handle(
                target,
                response,
                deadline,
                accept=accept,
                max_bytes=max_bytes,
                truncate=truncate,
                honour_opt_outs=honour_opt_outs,
            )

    def _handle(
        self,
        target: Target,
        response: BaseHTTPResponse,
        deadline: float,
        *,
        accept: Accept,
        max_bytes: int,
        truncate: bool,
        honour_opt_outs: bool,
    ) -> _Redirect | _Final:
        status = response.status
        url = target.url
        if 300 <= status < 400 and status != 304:
            location = response.headers.get("location")
            if not location:
                _reject(RejectReason.HTTP_SERVER_ERROR, f"HTTP {status} without Location", url)
            return _Redirect(location)
        if status in _NOT_FOUND:
            _reject(RejectReason.HTTP_NOT_FOUND, f"HTTP {status}", url)
        if status == 429:
            raise _Retryable(
                FetchRejected(RejectReason.HTTP_CLIENT_ERROR, "HTTP 429 Too Many Requests", url),
                _retry_after_s(response.headers.get("retry-after")),
            )
        if 400 <= status < 500:
            _reject(RejectReason.HTTP_CLIENT_ERROR, f"HTTP {status}", url)
        if 500 <= status < 600:
            raise _Retryable(
                FetchRejected(RejectReason.HTTP_SERVER_ERROR, f"HTTP {status}", url),
                _retry_after_s(response.headers.get("retry-after")),
            )
        if not 200 <= status < 300:
            _reject(RejectReason.HTTP_SERVER_ERROR, f"unexpected HTTP {status}", url)

        if honour_opt_outs and self.config.respect_x_robots_tag:
            directive = x_robots_opt_out(
                response.headers.getlist("x-robots-tag"),
                self.config.user_agent_token,
                self.config.x_robots_opt_out_directives,
            )
            if directive is not None:
                _reject(RejectReason.X_ROBOTS_TAG_OPT_OUT, f"X-Robots-Tag: {directive}", url)
        content_type = _media_type(response.headers.get("content-type", ""))
        if not _accepts(accept, content_type):
            _reject(
                RejectReason.WRONG_CONTENT_TYPE,
                f"content type {content_type or '(none)'} is not a {accept}",
                url,
            )
        declared = _content_length(response.headers.get("content-length"))
        if declared is not None and declared > max_bytes and not truncate:
            raise FetchRejected(
                RejectReason.TOO_MANY_BYTES,
                f"Content-Length {declared} is over the {max_bytes} byte limit",
                url,
                value=declared,
                limit=max_bytes,
            )
        body = self._read_body(response, url, deadline, max_bytes=max_bytes, truncate=truncate)
        headers = {name.lower(): response.headers[name] for name in response.headers}
        return _Final(status, headers, body)

    def _read_body(
        self,
        response: BaseHTTPResponse,
        url: str,
        deadline: float,
        *,
        max_bytes: int,
        truncate: bool,
    ) -> bytes:
        """Stream the body, counting bytes and time; never trust Content-Length."""
        chunks: list[bytes] = []
        size = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Retryable(
                    FetchRejected(
                        RejectReason.TIMEOUT,
                        f"body not complete within {self.config.total_timeout_s}s",
                        url,
                    )
                )
            _limit_socket_wait(response, remaining)
            with _translate_errors(url):
                chunk = response.read1(_CHUNK_BYTES)
            if not chunk:
                break
            size += len(chunk)
            self._counters.add("bytes", len(chunk))
            if size > max_bytes:
                if truncate:
                    chunks.append(chunk[: max_bytes - (size - len(chunk))])
                    break
                # The read stops here, so the body's true size stays unknown (no value).
                raise FetchRejected(
                    RejectReason.TOO_MANY_BYTES,
                    f"body is over the {max_bytes} byte limit",
                    url,
                    limit=max_bytes,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    # -- robots.txt and counting ---------------------------------------------------------------

    def robots_txt(self, url: str) -> str | None:
        """The robots.txt text of `url`'s origin, fetched now through the safe path (the
        job's once-per-host pre-pass); None when there is none to honour (missing, failing,
        or a URL that cannot be fetched at all)."""
        try:
            target = parse_target(url)
        except (InvalidUrl, UnsupportedScheme):
            return None
        return self._load_robots_txt(robots_target(target))

    def prime_robots_txt(self, url: str, text: str | None) -> None:
        """Use `text` (from `robots_txt`, maybe on another worker) as the rules of `url`'s
        origin in this process, instead of fetching robots.txt again."""
        try:
            target = parse_target(url)
        except (InvalidUrl, UnsupportedScheme):
            return
        self._robots.prime(target, text)

    def _load_robots_txt(self, robots: Target) -> str | None:
        """robots.txt text for an origin, or None (allow all) when it is missing or failing."""
        self._counters.add("robots_txt_fetches")
        try:
            response = self._follow(
                robots.url,
                accept="any",
                started=time.monotonic(),
                max_bytes=self.config.robots_max_bytes,
                truncate=True,
                honour_opt_outs=False,
            )
        except FetchRejected:
            # 4xx: no rules, allow all (RFC 9309). 5xx or unreachable: allow too (module doc).
            self._counters.add("robots_txt_unavailable")
            return None
        return response.body.decode("utf-8", errors="replace")

    def _count_rejection(self, rejection: FetchRejected) -> None:
        self._counters.add(f"rejected_{rejection.reason.value}")
        special = {
            RejectReason.BLOCKED_ADDRESS: "blocked",
            RejectReason.ROBOTS_TXT_DISALLOWED: "robots_disallowed",
            RejectReason.X_ROBOTS_TAG_OPT_OUT: "x_robots_opt_out",
        }.get(rejection.reason)
        if special is not None:
            self._counters.add(special)


# -- small pure helpers ------------------------------------------------------------------------


def _parse(url: str) -> Target:
    try:
        return parse_target(url)
    except UnsupportedScheme as err:
        raise FetchRejected(RejectReason.UNSUPPORTED_SCHEME, str(err), url) from err
    except InvalidUrl as err:
        raise FetchRejected(RejectReason.INVALID_URL, str(err), url) from err


def _reject(reason: RejectReason, detail: str, url: str) -> NoReturn:
    raise FetchRejected(reason, detail, url)


@contextmanager
def _translate_errors(url: str) -> Iterator[None]:
    """Turn urllib3 and socket errors into `FetchRejected` (retryable where that helps)."""
    try:
        yield
    except NewConnectionError as err:  # subclasses ConnectTimeoutError; check it first
        raise _Retryable(
            FetchRejected(RejectReason.CONNECTION_ERROR, f"cannot connect: {err}", url)
        ) from err
    except (ConnectTimeoutError, ReadTimeoutError, TimeoutError) as err:
        raise _Retryable(FetchRejected(RejectReason.TIMEOUT, f"timed out: {err}", url)) from err
    except SSLError as err:  # a bad certificate does not get better on retry
        raise FetchRejected(RejectReason.CONNECTION_ERROR, f"TLS failed: {err}", url) from err
    except DecodeError as err:
        raise FetchRejected(
            RejectReason.HTTP_SERVER_ERROR, f"undecodable Content-Encoding: {err}", url
        ) from err
    except (ProtocolError, HTTPError, OSError) as err:
        raise _Retryable(
            FetchRejected(RejectReason.CONNECTION_ERROR, f"connection failed: {err}", url)
        ) from err


@contextmanager
def _released(response: BaseHTTPResponse) -> Iterator[None]:
    """Return the connection to its pool: reusable after a full read, closed otherwise."""
    complete = False
    try:
        yield
        complete = response.status in range(200, 300)
    finally:
        if not complete:
            # An unread or half-read body would poison the next request on this connection.
            response.close()
        response.release_conn()


def _limit_socket_wait(response: BaseHTTPResponse, remaining_s: float) -> None:
    """Let no single socket read outlive the request's deadline."""
    connection = response.connection
    sock = getattr(connection, "sock", None)
    if sock is not None:
        sock.settimeout(max(remaining_s, 0.001))


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _accepts(accept: Accept, content_type: str) -> bool:
    if accept == "image":
        return content_type.startswith("image/")
    if accept == "page":
        return content_type in PAGE_CONTENT_TYPES
    return True


def _accept_header(accept: Accept) -> str:
    if accept == "image":
        return "image/avif,image/webp,image/apng,image/*;q=0.9,*/*;q=0.5"
    if accept == "page":
        return "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5"
    return "*/*"


def _content_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        # Several comma-joined values: trust none of them more than the largest.
        return max(int(v.strip()) for v in value.split(","))
    except ValueError:
        return None


def _retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())
