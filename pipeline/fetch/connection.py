"""Connections pinned to a vetted IP address.

How the pinning works: the fetcher never hands a host *name* to the HTTP library. For each
(scheme, host, port, vetted IP) it keeps a urllib3 connection pool whose `host` is the IP
itself, so urllib3 opens the socket to exactly the address `addresses.AddressPolicy`
approved and never resolves anything again. The name travels only where it must:
the Host header (set per request), and for https the TLS SNI (`server_hostname`) and the
certificate check (`assert_hostname`), so certificates are still verified against the
name the URL asked for. urllib3 is used directly rather than through `requests` because
`requests` reads proxy settings from the environment (a proxy would do its own DNS) and
has no hook that is both per-request and per-IP without subclassing its adapter.

Every socket connect goes through `_Counted*Connection.connect`, which bumps a counter
of this fetcher only (no class-level state), so tests can prove a refused URL never
reached the network.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.timeout import Timeout

from pipeline.fetch.addresses import IPAddress

OnConnect = Callable[[], None]


class _CountedHTTPConnection(HTTPConnection):
    def __init__(self, *args: Any, on_connect: OnConnect, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_connect = on_connect

    def connect(self) -> None:
        self._on_connect()
        super().connect()


class _CountedHTTPSConnection(HTTPSConnection):
    def __init__(self, *args: Any, on_connect: OnConnect, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_connect = on_connect

    def connect(self) -> None:
        self._on_connect()
        super().connect()


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CountedHTTPConnection


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CountedHTTPSConnection


PoolKey = tuple[str, str, int, str]


class PinnedPools:
    """A bounded, thread-safe set of urllib3 pools, one per (scheme, host, port, IP)."""

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        pool_size: int,
        max_pools: int,
        ca_certs: str | None,
        on_connect: OnConnect,
    ) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._pool_size = pool_size
        self._max_pools = max_pools
        self._ca_certs = ca_certs
        self._on_connect = on_connect
        self._pools: OrderedDict[PoolKey, HTTPConnectionPool] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, scheme: str, host: str, port: int, address: IPAddress) -> HTTPConnectionPool:
        """The pool that connects to `address` for `host` (created on first use)."""
        key: PoolKey = (scheme, host, port, str(address))
        evicted: HTTPConnectionPool | None = None
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                self._pools.move_to_end(key)
                return pool
            pool = self._new_pool(scheme, host, port, address)
            self._pools[key] = pool
            if len(self._pools) > self._max_pools:
                _, evicted = self._pools.popitem(last=False)
        if evicted is not None:
            # Connections checked out by other threads are closed when they are returned.
            evicted.close()
        return pool

    def _new_pool(
        self, scheme: str, host: str, port: int, address: IPAddress
    ) -> HTTPConnectionPool:
        timeout = Timeout(connect=self._connect_timeout_s)
        common: dict[str, Any] = {
            "host": str(address),
            "port": port,
            "timeout": timeout,
            "maxsize": self._pool_size,
            "block": False,
            "retries": False,
            "on_connect": self._on_connect,
        }
        if scheme == "https":
            return _PinnedHTTPSPool(
                **common,
                cert_reqs="CERT_REQUIRED",
                ca_certs=self._ca_certs,
                server_hostname=host,
                assert_hostname=host,
            )
        return _PinnedHTTPPool(**common)

    def close(self) -> None:
        """Close every pool and its idle connections."""
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.close()
