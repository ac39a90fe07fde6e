"""Real object-store API servers on loopback, for tests of gs:// and s3:// dataset folders.

- GCS: `gcp-storage-emulator` (the JSON API, in memory), reached by gcsfs through
  `STORAGE_EMULATOR_HOST`, with anonymous credentials (`token="anon"` through fsspec's
  config), so gcsfs never looks for Application Default Credentials or asks the GCE metadata
  server.
- S3: moto in server mode, reached by s3fs/botocore through `AWS_ENDPOINT_URL`, with fake keys
  in the environment, no credentials or config files, and the EC2 metadata lookup off.

Each server starts on a free loopback port; `ObjectStore.env` is what a process (or a
`monkeypatch`) sets so fsspec talks to it. `loopback_only` makes any attempt to resolve or
connect to another address fail loudly, so a test proves nothing left the machine.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec


@dataclass
class ObjectStore:
    """One bucket on one local server, and the environment that points fsspec at it."""

    scheme: str  # "gs" or "s3"
    bucket: str
    endpoint: str
    env: dict[str, str] = field(default_factory=dict)
    fsspec_conf: dict[str, Any] = field(default_factory=dict)

    def url(self, *parts: str) -> str:
        """`scheme://bucket/part/...`."""
        return "/".join([f"{self.scheme}://{self.bucket}", *parts])

    def unique_url(self, name: str) -> str:
        """A fresh folder in the bucket, so tests sharing a server never see each other."""
        return self.url(f"{name}-{uuid.uuid4().hex[:8]}")

    def filesystem(self) -> fsspec.AbstractFileSystem:
        """A new (uncached) fsspec filesystem for the store, configured as our code sees it."""
        return fsspec.filesystem(self.scheme, skip_instance_cache=True, **self.fsspec_conf)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def gcs_emulator(bucket: str = "lait-test") -> Iterator[ObjectStore]:
    """gcp-storage-emulator, in memory on a free loopback port, with `bucket` created."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()
    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    endpoint = f"http://127.0.0.1:{port}"
    from fsspec.registry import _registry as registry  # restored below: no public unregister
    from gcsfs.core import GCSFileSystem

    saved = {name: registry.get(name) for name in ("gs", "gcs")}
    for name in saved:
        fsspec.register_implementation(name, GCSFileSystem, clobber=True)
    try:
        yield ObjectStore(
            scheme="gs",
            bucket=bucket,
            endpoint=endpoint,
            env={
                "STORAGE_EMULATOR_HOST": endpoint,
                "FSSPEC_GS_TOKEN": "anon",  # for processes that import fsspec afresh
                "GOOGLE_CLOUD_PROJECT": "lait-test",
                "NO_GCE_CHECK": "true",  # gcsfs, google-auth: never probe the metadata server
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # for processes importing gcsfs
            },
            fsspec_conf={"token": "anon"},
        )
    finally:
        for name, implementation in saved.items():
            if implementation is None:
                registry.pop(name, None)
            else:
                registry[name] = implementation
        server.stop()


@contextlib.contextmanager
def s3_server(bucket: str = "lait-test") -> Iterator[ObjectStore]:
    """moto's S3 in server mode on a free loopback port, with `bucket` created."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    store = ObjectStore(scheme="s3", bucket=bucket, endpoint=endpoint, env=env)
    try:
        with _environment(env):
            store.filesystem().mkdir(bucket)
        yield store
    finally:
        server.stop()


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class NonLoopbackAccess(AssertionError):
    """A test tried to resolve or reach an address other than loopback."""


def _is_loopback(host: object) -> bool:
    if host in (None, "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def loopback_only() -> Iterator[list[str]]:
    """Refuse (and record) every name lookup or connection that is not to loopback."""
    attempts: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_loopback(host.decode() if isinstance(host, bytes) else host):
            attempts.append(f"resolve {host}")
            raise NonLoopbackAccess(f"test tried to resolve {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def _check(address: Any) -> None:
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            attempts.append(f"connect {address[0]}")
            raise NonLoopbackAccess(f"test tried to connect to {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        _check(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        _check(address)
        return real_connect_ex(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    try:
        yield attempts
    finally:
        socket.getaddrinfo = real_getaddrinfo
        socket.socket.connect = real_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = real_connect_ex  # type: ignore[method-assign]
