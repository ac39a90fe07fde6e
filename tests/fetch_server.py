"""A real HTTP(S) server on 127.0.0.1 with one route per fetcher behaviour under test.

Routes keep per-test state keyed by an `id` query parameter, so tests sharing one server
do not see each other's counts.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import http.server
import ssl
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
    b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)
PAGE = b"<!doctype html><html><body><img src='/img' alt='a dot'></body></html>"
HUGE_TOTAL = 200 * 1024 * 1024
ROBOTS_TXT = b"User-agent: LAIT\nDisallow: /private/\n\nUser-agent: *\nDisallow:\n"


class ServerState:
    """What the server saw, shared between handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.by_id: Counter[str] = Counter()
        self.seen_headers: list[dict[str, str]] = []
        self.huge_sent: dict[str, int] = {}
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.starts: defaultdict[str, list[float]] = defaultdict(list)
        self.sni: list[str | None] = []

    def bump(self, key: str) -> int:
        with self.lock:
            self.by_id[key] += 1
            return self.by_id[key]


class FetchTestHandler(http.server.BaseHTTPRequestHandler):
    """Routes for the fetcher tests (HTTP/1.0: the connection closes after each response)."""

    server: FetchTestServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing ---------------------------------------------------------------------------

    def _reply(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "image/png",
        headers: dict[str, str] | None = None,
        length: int | None = -1,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length == -1:
            self.send_header("Content-Length", str(len(body)))
        elif length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        state = self.server.state
        parts = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parts.query)
        ident = query.get("id", [""])[0]
        with state.lock:
            state.hits[parts.path] += 1
            state.seen_headers.append({k.lower(): v for k, v in self.headers.items()})
            state.starts[parts.path].append(time.monotonic())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self._route(parts.path, query, ident)

    def _route(self, path: str, query: dict[str, list[str]], ident: str) -> None:
        state = self.server.state
        if path in ("/img", "/private/img", "/echo"):
            self._reply(200, PNG)
        elif path == "/page":
            self._reply(200, PAGE, "text/html; charset=utf-8")
        elif path == "/text":
            self._reply(200, b"just text", "text/plain")
        elif path == "/missing":
            self._reply(404, b"nope", "text/plain")
        elif path == "/gone":
            self._reply(410, b"gone", "text/plain")
        elif path == "/forbidden":
            self._reply(403, b"no", "text/plain")
        elif path == "/flaky":
            if state.bump(path + ident) == 1:
                self._reply(500, b"oops", "text/plain")
            else:
                self._reply(200, PNG)
        elif path == "/always500":
            self._reply(503, b"down", "text/plain")
        elif path == "/rate":
            if state.bump(path + ident) == 1:
                self._reply(429, b"slow down", "text/plain", {"Retry-After": "1"})
            else:
                self._reply(200, PNG)
        elif path == "/rate-always":
            self._reply(429, b"slow down", "text/plain", {"Retry-After": "0"})
        elif path == "/rate-long":
            self._reply(429, b"come back later", "text/plain", {"Retry-After": "3600"})
        elif path == "/slow":
            time.sleep(2.0)
            self._reply(200, PNG)
        elif path == "/drip":
            self._drip()
        elif path.startswith("/redirect/"):
            left = int(path.rsplit("/", 1)[1])
            if left > 0:
                self._reply(302, b"", "text/plain", {"Location": f"/redirect/{left - 1}"})
            else:
                self._reply(200, PNG)
        elif path == "/loop/a":
            self._reply(302, b"", "text/plain", {"Location": "/loop/b"})
        elif path == "/loop/b":
            self._reply(301, b"", "text/plain", {"Location": "/loop/a#frag"})
        elif path == "/to-metadata":
            self._reply(302, b"", "text/plain", {"Location": "http://metadata.test/latest/"})
        elif path == "/huge":
            self._huge(ident)
        elif path == "/lying-small":
            # Claims 10 bytes, then keeps sending: the client must read 10 and stop.
            self._reply(200, PNG * 30_000, length=10)
        elif path == "/lying-big":
            self._reply(200, PNG, length=999_999_999)
        elif path == "/truncated":
            self._reply(200, PNG[:20], length=len(PNG) * 10)
        elif path == "/gzip-bomb":
            bomb = gzip.compress(b"\0" * 50_000_000, compresslevel=9)
            self._reply(200, bomb, headers={"Content-Encoding": "gzip"})
        elif path == "/xrobots":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            for value in query.get("v", []):
                self.send_header("X-Robots-Tag", value)
            self.end_headers()
            self.wfile.write(PNG)
        elif path == "/robots.txt":
            self._robots()
        elif path == "/concurrent":
            self._concurrent(ident)
        else:
            self._reply(404, b"no such route", "text/plain")

    def _drip(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.05)

    def _huge(self, ident: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        chunk = b"\xff" * 65536
        sent = 0
        try:
            while sent < HUGE_TOTAL:
                self.wfile.write(chunk)
                sent += len(chunk)
        finally:
            with self.server.state.lock:
                self.server.state.huge_sent[ident] = sent

    def _robots(self) -> None:
        host = self.headers.get("Host", "").split(":", 1)[0]
        with self.server.state.lock:
            self.server.state.hits[f"robots:{host}"] += 1
        if host == "robots.test":
            self._reply(200, ROBOTS_TXT, "text/plain")
        elif host == "brokenrobots.test":
            self._reply(500, b"down", "text/plain")
        else:
            self._reply(404, b"none", "text/plain")

    def _concurrent(self, ident: str) -> None:
        state = self.server.state
        with state.lock:
            state.in_flight[ident] += 1
            state.max_in_flight[ident] = max(state.max_in_flight[ident], state.in_flight[ident])
        try:
            time.sleep(0.1)
        finally:
            with state.lock:
                state.in_flight[ident] -= 1
        self._reply(200, PNG)


class KeepAliveHandler(FetchTestHandler):
    """The same routes over HTTP/1.1, so connections can be reused (Content-Length routes only)."""

    protocol_version = "HTTP/1.1"


class FetchTestServer(http.server.ThreadingHTTPServer):
    """A threading server on 127.0.0.1, port chosen by the OS, with its `state`."""

    daemon_threads = True

    def __init__(
        self,
        tls: ssl.SSLContext | None = None,
        handler: type[FetchTestHandler] = FetchTestHandler,
    ) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.state = ServerState()
        if tls is not None:
            tls.sni_callback = self._record_sni
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def _record_sni(self, _sock: Any, server_name: str | None, _ctx: Any) -> None:
        with self.state.lock:
            self.state.sni.append(server_name)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> FetchTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-body is what several tests do on purpose


def self_signed_tls(tmp: Path, hostname: str) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for `hostname` and the CA file a client must trust."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(hostname)]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp / "cert.pem"
    key_path = tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path
