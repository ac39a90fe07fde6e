"""Serve a `DemoSite` over HTTP on 127.0.0.1, honouring each resource's status, headers,
delay and redirect.

`DemoWebServer` binds at construction (port 0: a free port) and serves from a daemon thread
until `stop()` or the end of its `with` block. It never logs per request; it counts.
"""

from __future__ import annotations

import ipaddress
import socketserver
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO, cast
from urllib.parse import urlsplit

from lait.demo_web.generator import build_site
from lait.demo_web.site import DemoSite

NOT_FOUND_BODY = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>" + (
    b"<body><h1>Not Found</h1></body></html>\n"
)


class NonLoopbackHostError(ValueError):
    """The demo web may only listen on a loopback IPv4 address."""


class _DemoHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # crawlers open many connections at once

    def __init__(self, address: tuple[str, int], demo: DemoWebServer) -> None:
        self.demo = demo
        super().__init__(address, _DemoRequestHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        # A crawler that gives up on a slow response resets its connection; that is the
        # client's business, not a server error worth a traceback.
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionResetError | BrokenPipeError | TimeoutError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host's FQDN (a DNS lookup); the demo web
        # knows its name and must not touch anything beyond loopback.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _DemoRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so crawlers can reuse connections
    server_version = "LAITDemoWeb/0.1"
    timeout = 30  # drop idle keep-alive connections

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the server counts requests instead of logging them."""

    def _answer(self, send_body: bool) -> None:
        demo = cast(_DemoHTTPServer, self.server).demo
        path = urlsplit(self.path).path or "/"
        demo._count_request(path)
        resource = demo.site.lookup(path)
        try:
            if resource is None:
                self._send(404, "text/html; charset=utf-8", NOT_FOUND_BODY, (), send_body)
                return
            if resource.delay_s > 0:
                time.sleep(resource.delay_s)
            headers = list(resource.headers)
            location = resource.location(demo.base_url)
            if location is not None:
                headers.append(("Location", location))
            body = resource.render(demo.base_url)
            self._send(resource.status, resource.content_type, body, headers, send_body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. its timeout beat a slow response): count it, move on.
            demo._count_disconnect()
            self.close_connection = True

    def _send(
        self,
        status: int,
        content_type: str,
        body: bytes,
        headers: Sequence[tuple[str, str]],
        send_body: bool,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)


def _check_loopback(host: str) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise NonLoopbackHostError(
            f"host {host!r} is not an IP address; the demo web serves on 127.0.0.1 only"
        ) from None
    if address.version != 4 or not address.is_loopback:
        raise NonLoopbackHostError(
            f"host {host} is not a loopback IPv4 address; the demo web serves on 127.0.0.1 only"
        )


class DemoWebServer:
    """A threaded HTTP server for `site` on a loopback address; a context manager.

    Binds and starts serving at construction: `base_url` is known at once.
    """

    def __init__(self, site: DemoSite, host: str = "127.0.0.1", port: int = 0) -> None:
        _check_loopback(host)
        self.site = site
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._disconnects = 0
        self._httpd = _DemoHTTPServer((host, port), self)
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self.base_url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"demo-web-{self.port}",
            daemon=True,
        )
        self._stopped = False
        self._thread.start()

    def url(self, path: str) -> str:
        """The absolute URL of a site path, e.g. url('/index.html')."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    @property
    def index_url(self) -> str:
        """The index page's URL."""
        return self.url(self.site.index_path)

    @property
    def cc_list_url(self) -> str:
        """The Conceptual Captions TSV's URL."""
        return self.url(self.site.cc_list_path)

    @property
    def sbu_urls_url(self) -> str:
        """The SBU URL list's URL."""
        return self.url(self.site.sbu_urls_path)

    @property
    def sbu_captions_url(self) -> str:
        """The SBU caption list's URL."""
        return self.url(self.site.sbu_captions_path)

    @property
    def narratives_url(self) -> str:
        """The Localized Narratives JSONL's URL (word-to-location traces of every scene)."""
        return self.url(self.site.narratives_path)

    @property
    def requests_served(self) -> int:
        """How many requests the server has answered (or is answering)."""
        with self._lock:
            return sum(self._requests.values())

    @property
    def client_disconnects(self) -> int:
        """How many responses the client hung up on before they were written."""
        with self._lock:
            return self._disconnects

    def paths_requested(self) -> Counter[str]:
        """A copy of the request count per path (query strings dropped)."""
        with self._lock:
            return Counter(self._requests)

    def ground_truth_records(self) -> list[dict[str, Any]]:
        """The site's ground truth with absolute URLs on this server."""
        return self.site.ground_truth.records(self.base_url)

    def _count_request(self, path: str) -> None:
        with self._lock:
            self._requests[path] += 1

    def _count_disconnect(self) -> None:
        with self._lock:
            self._disconnects += 1

    def stop(self) -> None:
        """Stop serving and close the listening socket. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> DemoWebServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    seed: int = 0,
    port: int = 8000,
    n_images: int = 600,
    *,
    host: str = "127.0.0.1",
    slow_delay_s: float = 3.0,
    ground_truth_path: str | Path | None = None,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Build the demo web and serve it until Ctrl-C (or until `stop` is set).

    Prints the base URL and the index and list URLs to `out` (stdout by default); with
    `ground_truth_path`, first writes the ground truth there as JSON lines with absolute URLs.
    """
    out = out if out is not None else sys.stdout
    started = time.perf_counter()
    site = build_site(seed=seed, n_images=n_images, slow_delay_s=slow_delay_s)
    built_s = time.perf_counter() - started
    with DemoWebServer(site, host=host, port=port) as server:
        truth = site.ground_truth
        print(
            f"LAIT demo web: seed {seed}, {len(site.page_paths)} pages, {len(truth)} image"
            f" references (built in {built_s:.1f} s)",
            file=out,
        )
        print(f"  serving at    {server.base_url}", file=out)
        print(f"  index         {server.index_url}", file=out)
        print(f"  CC list       {server.cc_list_url}", file=out)
        print(f"  SBU urls      {server.sbu_urls_url}", file=out)
        print(f"  SBU captions  {server.sbu_captions_url}", file=out)
        print(f"  narratives    {server.narratives_url}", file=out)
        print(f"  robots.txt    {server.url(site.robots_path)}", file=out)
        if ground_truth_path is not None:
            count = truth.write_jsonl(ground_truth_path, base_url=server.base_url)
            print(f"  ground truth  {ground_truth_path} ({count} lines)", file=out)
        # The demo CLIP is named here, never a default: it only knows the demo web's scenes.
        print(
            f"  crawl it      lait crawl --pages {server.index_url} --depth 1 "
            "--allow-network 127.0.0.1/32 --set clip.model=lait-demo-clip --out ds/",
            file=out,
        )
        print("Press Ctrl-C to stop.", file=out, flush=True)
        event = stop if stop is not None else threading.Event()
        try:
            while not event.wait(0.5):
                pass
        except KeyboardInterrupt:
            print(f"Stopped after {server.requests_served} requests.", file=out)
