"""Caches every `Fetcher` of a worker process shares: DNS answers and robots.txt rules.

A Beam worker process runs many DoFn instances (one per step and per thread), each with its
own `Fetcher`. Kept per instance, each would ask DNS again for every host (the cloud
resolver's rate limit is what img2dataset users hit first) and fetch every robots.txt
again. So both caches live once per process, found by what makes their answers valid:

- DNS answers by resolver (the system one in production; tests inject their own), bounded in
  size (least recently used evicted) and in age (`FetchConfig.dns_cache_ttl_s`; a failed
  lookup is kept `NEGATIVE_TTL_S` at most). The cache holds raw answers only: every hop of
  every fetch still vets each address (`AddressPolicy.resolve`), so no cached answer can skip
  the SSRF rules.
- robots.txt rules by fetch config and resolver (the rules a fetch under one policy loaded
  are not reused under another).

Both load once per key even when many threads ask at once, and both are thread-safe. They
hold nothing a job depends on for correctness: a process without them fetches the same.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from pipeline.fetch.addresses import Resolver
from pipeline.fetch.config import FetchConfig
from pipeline.fetch.robots import RobotsCache

NEGATIVE_TTL_S = 30.0  # a name that did not resolve is asked again after this long at most


class _Answer:
    __slots__ = ("addresses", "error", "expires")

    def __init__(
        self, addresses: list[str] | None, error: BaseException | None, expires: float
    ) -> None:
        self.addresses = addresses
        self.error = error
        self.expires = expires


class DnsCache:
    """(host, port) → the resolver's answer, for at most `ttl_s` seconds and `max_entries` names.

    `resolve` has the `Resolver` signature plus `on_lookup`, called once for each real lookup
    (a miss), so a fetcher can count the lookups it caused.
    """

    def __init__(
        self,
        resolver: Resolver,
        ttl_s: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._ttl_s = ttl_s
        self._negative_ttl_s = min(ttl_s, NEGATIVE_TTL_S)
        self._max_entries = max_entries
        self._clock = clock
        self._answers: OrderedDict[tuple[str, int], _Answer] = OrderedDict()
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        self._lock = threading.Lock()

    def resolve(
        self, host: str, port: int, on_lookup: Callable[[], None] | None = None
    ) -> list[str]:
        """The addresses of `host` (a fresh list); raises what the resolver raised."""
        key = (host, port)
        with self._lock:
            answer = self._fresh(key)
            if answer is None:
                key_lock = self._loading.setdefault(key, threading.Lock())
        if answer is None:
            with key_lock:  # one lookup per name; other threads wait for its answer
                with self._lock:
                    answer = self._fresh(key)
                if answer is None:
                    answer = self._lookup(host, port, on_lookup)
                    with self._lock:
                        self._store(key, answer)
                        self._loading.pop(key, None)
        if answer.error is not None:
            raise _copy(answer.error)
        return list(answer.addresses or [])

    def __len__(self) -> int:
        with self._lock:
            return len(self._answers)

    def _lookup(self, host: str, port: int, on_lookup: Callable[[], None] | None) -> _Answer:
        if on_lookup is not None:
            on_lookup()
        try:
            addresses = list(self._resolver(host, port))
        except (OSError, UnicodeError) as error:
            return _Answer(None, error, self._clock() + self._negative_ttl_s)
        return _Answer(addresses, None, self._clock() + self._ttl_s)

    def _fresh(self, key: tuple[str, int]) -> _Answer | None:
        answer = self._answers.get(key)
        if answer is None:
            return None
        if answer.expires <= self._clock():
            del self._answers[key]
            return None
        self._answers.move_to_end(key)
        return answer

    def _store(self, key: tuple[str, int], answer: _Answer) -> None:
        if self._ttl_s <= 0:
            return  # caching switched off: every hop asks the resolver
        self._answers[key] = answer
        self._answers.move_to_end(key)
        while len(self._answers) > self._max_entries:
            self._answers.popitem(last=False)


def _copy(error: BaseException) -> BaseException:
    """A fresh exception like `error`, so threads never raise (and annotate) one object."""
    try:
        return type(error)(*error.args)
    except TypeError:
        return error


_registry_lock = threading.Lock()
_dns_caches: dict[Hashable, DnsCache] = {}
_robots_caches: dict[Hashable, RobotsCache] = {}


def clear_shared_caches() -> None:
    """Forget every cached DNS answer and robots.txt rule of this process (a long-lived
    process that must see DNS or robots.txt changes now; the next fetch of each host asks)."""
    with _registry_lock:
        _dns_caches.clear()
        _robots_caches.clear()


def shared_dns_cache(resolver: Resolver, config: FetchConfig) -> DnsCache:
    """This process's DNS cache for `resolver` with `config`'s TTL and size."""
    key = (resolver, config.dns_cache_ttl_s, config.dns_cache_size)
    with _registry_lock:
        cache = _dns_caches.get(key)
        if cache is None:
            cache = DnsCache(resolver, config.dns_cache_ttl_s, config.dns_cache_size)
            _dns_caches[key] = cache
        return cache


def shared_robots_cache(config: FetchConfig, resolver: Resolver) -> RobotsCache:
    """This process's robots.txt cache for fetchers with `config` and `resolver`."""
    key = (config, resolver)
    with _registry_lock:
        cache = _robots_caches.get(key)
        if cache is None:
            cache = RobotsCache(None, config.user_agent, config.robots_cache_size)
            _robots_caches[key] = cache
        return cache
