"""Real object-store API servers on loopback, for tests of gs:// and s3:// dataset folders.

- GCS: `gcp-storage-emulator` (the JSON API, in memory), reached by gcsfs through
  `STORAGE_EMULATOR_HOST`, with anonymous credentials (`token="anon"` through fsspec's
  config), so gcsfs never looks for Application Default Credentials or asks the GCE metadata
  server.
- S3: moto in server mode, reached by s3fs/botocore through `AWS_ENDPOINT_URL`, with fake keys
  in the environment, no credentials or config files, and the EC2 metadata lookup off.

Each server starts on a free loopback port; `ObjectStore.env` is what a process (or a
`monkeypatch`) sets so fsspec talks to it. `loopback_only` makes any attempt to resolve or
connect to another address fail loudly, so a test proves nothing left the machine; the
environment also points Google's metadata server at a closed loopback port and turns AWS's
off, for processes the tests start (where `loopback_only` does not reach).

The pytest fixtures `server` (one per scheme, per module) and `store` (that server, set in the
environment for one test) are imported by the test modules that use them; `denying_server`
answers every request 403 AccessDenied, as a store does for an account without permission.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import json
import logging
import os
import socket
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pytest


@dataclass
class ObjectStore:
    """One bucket on one local server, and the environment that points fsspec at it."""

    scheme: str  # "gs" or "s3"
    bucket: str
    endpoint: str
    env: dict[str, str] = field(default_factory=dict)
    fsspec_conf: dict[str, Any] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)  # what reached a `denying_server`

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


def no_metadata_servers() -> dict[str, str]:
    """Environment that keeps google-auth, gcsfs and botocore off the cloud metadata servers
    (169.254.169.254, metadata.google.internal): GCE's is a closed loopback port, EC2's off."""
    closed = f"127.0.0.1:{free_port()}"
    return {
        "NO_GCE_CHECK": "true",
        "GCE_METADATA_HOST": closed,
        "GCE_METADATA_IP": closed,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


# google-auth reads NO_GCE_CHECK and GCE_METADATA_HOST/IP once, when it is imported: set them
# for the whole test process as soon as a module using these servers is collected (before any
# test imports google.auth), not only in each test's environment.
os.environ.update(no_metadata_servers())


@contextlib.contextmanager
def gcs_emulator(bucket: str = "lait-test") -> Iterator[ObjectStore]:
    """gcp-storage-emulator, in memory on a free loopback port, with `bucket` created."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()
    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        with _gcsfs_registered():
            yield ObjectStore(
                scheme="gs",
                bucket=bucket,
                endpoint=endpoint,
                env={
                    **no_metadata_servers(),  # gcsfs, google-auth: never probe the metadata server
                    "STORAGE_EMULATOR_HOST": endpoint,
                    "FSSPEC_GS_TOKEN": "anon",  # for processes that import fsspec afresh
                    "GOOGLE_CLOUD_PROJECT": "lait-test",
                    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # for processes importing gcsfs
                },
                fsspec_conf={"token": "anon"},
            )
    finally:
        server.stop()


@contextlib.contextmanager
def _gcsfs_registered() -> Iterator[None]:
    """gs:// and gcs:// served by gcsfs for the block, whatever was registered before."""
    from fsspec.registry import _registry as registry  # restored below: no public unregister
    from gcsfs.core import GCSFileSystem

    saved = {name: registry.get(name) for name in ("gs", "gcs")}
    for name in saved:
        fsspec.register_implementation(name, GCSFileSystem, clobber=True)
    try:
        yield
    finally:
        for name, implementation in saved.items():
            if implementation is None:
                registry.pop(name, None)
            else:
                registry[name] = implementation


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
        **no_metadata_servers(),
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
    # moto keeps its buckets in the process, shared by every server it starts: begin empty.
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    direct.open(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()
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


STORES = {"gs": gcs_emulator, "s3": s3_server}


@pytest.fixture(scope="module", params=sorted(STORES))
def server(request: pytest.FixtureRequest) -> Iterator[ObjectStore]:
    """One local server per scheme, shared by the module's tests (each uses its own folder)."""
    # Only a missing emulator package is a skip (the dev extra not installed); a server that
    # fails to start is a failure, never a quiet skip of every test that needs it.
    pytest.importorskip({"gs": "gcp_storage_emulator", "s3": "moto.server"}[request.param])
    started = STORES[request.param]()
    store = started.__enter__()
    yield store
    started.__exit__(None, None, None)


@pytest.fixture
def store(server: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStore]:
    """`server`, with the environment and fsspec's config pointing at it for this test only."""
    with pointed_at(server, monkeypatch):
        yield server


@contextlib.contextmanager
def pointed_at(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment and fsspec's config pointing at `store` (undone with `monkeypatch`),
    and `loopback_only` around the block: it fails if anything reached beyond loopback."""
    for name, value in store.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(fsspec.config.conf, store.scheme, dict(store.fsspec_conf))
    fsspec.get_filesystem_class(store.scheme).clear_instance_cache()  # no stale credentials
    with loopback_only() as attempts:
        yield
    fsspec.get_filesystem_class(store.scheme).clear_instance_cache()
    assert attempts == [], f"a test reached beyond loopback: {attempts}"


class _Denying(http.server.BaseHTTPRequestHandler):
    """Every request refused as S3 (XML) and GCS (JSON) refuse an account without access."""

    requests: list[str]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _deny(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        head = self.rfile.read(length)[:2000] if length else b""  # GCS names objects in the body
        self.requests.append(f"{self.command} {self.path} {head.decode(errors='replace')}")
        if self.headers.get("x-amz-date") or "AWS4" in (self.headers.get("Authorization") or ""):
            content_type = "application/xml"
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                b"<Message>Access Denied</Message><RequestId>lait-test</RequestId></Error>"
            )
        else:
            content_type = "application/json"
            message = "lait-test does not have storage.objects.create access to the bucket."
            body = json.dumps({"error": {"code": 403, "message": message}}).encode()
        self.send_response(403)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _deny


@contextlib.contextmanager
def denying_server(scheme: str, bucket: str = "lait-test") -> Iterator[ObjectStore]:
    """A loopback server that answers every request 403 (S3's AccessDenied or GCS's JSON
    error) as `scheme`'s store would; `store.requests` lists what reached it."""
    requests: list[str] = []
    handler = type("Denying", (_Denying,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
    env = {**no_metadata_servers()}
    conf: dict[str, Any] = {}
    if scheme == "gs":
        env.update(STORAGE_EMULATOR_HOST=endpoint, GOOGLE_CLOUD_PROJECT="lait-test")
        env.update(FSSPEC_GS_TOKEN="anon", GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false")
        conf = {"token": "anon"}
    else:
        env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing")
        env.update(AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
        env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
        env.update(AWS_MAX_ATTEMPTS="1", AWS_RETRY_MODE="standard")
    try:
        with _gcsfs_registered() if scheme == "gs" else contextlib.nullcontext():
            yield ObjectStore(scheme, bucket, endpoint, env, conf, requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
