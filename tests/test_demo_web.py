"""The embedded demo web: deterministic generation, complete ground truth, and a real HTTP
server on 127.0.0.1 that serves exactly what the ground truth says."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import urllib.robotparser
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from lait.demo_web import (
    COLOURS,
    LANGUAGES,
    DemoSite,
    DemoWebServer,
    ImageReference,
    NoiseKind,
    NonLoopbackHostError,
    build_site,
    describe_scene,
    random_scene,
    render_scene,
    serve,
)

SMALL = 48  # n_images for tests that do not need the default size


# --- HTTP helpers: loopback only, proxies off, redirects not followed unless asked ---------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def _fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    assert url.startswith("http://127.0.0.1:"), url
    request = urllib.request.Request(url, method=method)
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()


def _follow(url: str, max_hops: int = 10) -> tuple[list[str], int, bytes]:
    """Follow redirects by hand: (every URL visited, final status, final body)."""
    visited = [url]
    for _ in range(max_hops):
        status, headers, body = _fetch(visited[-1])
        if status not in (301, 302, 303, 307, 308):
            return visited, status, body
        visited.append(urljoin(visited[-1], headers["Location"]))
    return visited, 302, b""


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_site() -> DemoSite:
    return build_site()


@pytest.fixture(scope="module")
def server(default_site: DemoSite) -> Iterator[DemoWebServer]:
    with DemoWebServer(default_site) as running:
        yield running


def _first(site: DemoSite, kind: NoiseKind, **fields: Any) -> ImageReference:
    for ref in site.ground_truth.with_noise(kind):
        if all(getattr(ref, name) == value for name, value in fields.items()):
            return ref
    raise AssertionError(f"no {kind} reference with {fields}")


# --- generation --------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_site() -> None:
    first, second = build_site(seed=7, n_images=SMALL), build_site(seed=7, n_images=SMALL)
    assert first.resources.keys() == second.resources.keys()
    for path, resource in first.resources.items():
        assert resource == second.resources[path], path
    assert first.digest() == second.digest()
    assert first.ground_truth.records() == second.ground_truth.records()
    assert build_site(seed=8, n_images=SMALL).digest() != first.digest()
    # Another process, another hash seed: still the same bytes (no set-order dependence).
    script = f"from lait.demo_web import build_site; print(build_site(7, {SMALL}).digest())"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    other = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert other.stdout.strip() == first.digest()


def test_default_site_holds_every_noise_kind_and_is_mostly_clean(default_site: DemoSite) -> None:
    counts = default_site.ground_truth.noise_counts()
    assert set(counts) == set(NoiseKind)
    page_refs = [r for r in default_site.ground_truth.references if r.source == "page"]
    content = [r for r in page_refs if r.scene is not None and NoiseKind.DATA_URI not in r.noise]
    graphics = default_site.ground_truth.with_noise(NoiseKind.NON_NATURAL_IMAGE)
    assert len(content) + len(graphics) == default_site.config.n_images == 600
    clean_share = sum(NoiseKind.CLEAN in r.noise for r in content) / len(content)
    assert 0.5 < clean_share < 0.75
    for kind in (NoiseKind.TRUNCATED_IMAGE, NoiseKind.MISMATCHED_CAPTION, NoiseKind.TOO_SMALL):
        share = sum(kind in r.noise for r in content) / len(content)
        assert 0.02 <= share <= 0.05, (kind, share)
    languages = {
        r.language for r in default_site.ground_truth.with_noise(NoiseKind.NON_ENGLISH_CAPTION)
    }
    assert languages == set(LANGUAGES)
    transforms = {
        r.near_duplicate_transform
        for r in default_site.ground_truth.with_noise(NoiseKind.NEAR_DUPLICATE)
    }
    assert transforms == {"requality", "resize", "crop"}


def test_content_noise_is_non_natural_graphics_and_watermarked_scenes(
    default_site: DemoSite,
) -> None:
    truth = default_site.ground_truth
    graphics = truth.with_noise(NoiseKind.NON_NATURAL_IMAGE)
    marked = truth.with_noise(NoiseKind.WATERMARKED_IMAGE)
    assert len(graphics) == len(marked) == round(600 * default_site.config.noise_rate)
    assert {r.source for r in graphics + marked} == {"page"}
    # Graphics have no scene (nothing to narrate or ground) and a true caption of their own.
    assert all(r.scene is None and r.graphic and r.caption == r.true_caption for r in graphics)
    assert len({r.graphic for r in graphics}) >= 4
    # Watermarked images are scenes with their true caption; neither is a duplicate's original.
    assert all(r.scene is not None and r.caption == r.true_caption for r in marked)
    originals = {r.duplicate_of for r in truth.references if r.duplicate_of}
    assert not originals & {r.image_id for r in graphics + marked}
    for ref in (graphics[0], marked[0]):
        resource = default_site.lookup(ref.url)
        assert resource is not None
        with Image.open(io.BytesIO(resource.body)) as image:
            assert image.size == (ref.width, ref.height)
            served = image.convert("RGB")
        if ref.scene is not None:  # the mark changed the scene's pixels, visibly
            seed = zlib.crc32(f"{default_site.config.seed}/{ref.image_id}".encode())
            plain = np.asarray(render_scene(ref.scene, texture_seed=seed), dtype=np.float64)
            difference = np.abs(np.asarray(served, dtype=np.float64) - plain)
            assert difference.mean() > 3.0, difference.mean()  # JPEG alone: under 2


def test_ground_truth_is_json_lines_with_absolute_urls(
    default_site: DemoSite, tmp_path: Any
) -> None:
    out = tmp_path / "ground_truth.jsonl"
    count = default_site.ground_truth.write_jsonl(out, base_url="http://127.0.0.1:9")
    lines = out.read_text(encoding="utf-8").splitlines()
    assert count == len(lines) == len(default_site.ground_truth)
    records = [json.loads(line) for line in lines]
    assert [r["ref_id"] for r in records] == list(range(len(records)))
    for record in records:
        assert record["url"].startswith(("http://127.0.0.1:9/", "data:"))
        assert "{BASE}" not in (record["html_src"] or "")
        assert record["noise"] and (record["noise"] == ["clean"] or "clean" not in record["noise"])
    duplicate = next(r for r in records if "exact_duplicate" in r["noise"])
    original = next(r for r in records if r["image_id"] == duplicate["duplicate_of"])
    assert original["scene_id"] == duplicate["scene_id"]
    assert original["noise"] == ["clean"]


def test_scene_boxes_ground_each_object_word() -> None:
    import random

    rng = random.Random(3)
    for i in range(20):
        scene = random_scene(rng, 400, 360)
        image = render_scene(scene, texture_seed=i)
        caption = describe_scene(scene, rng)
        assert image.size == (400, 360)
        for obj in scene.objects:
            assert obj.phrase in caption
            x1, y1, x2, y2 = obj.box
            assert 0 <= x1 < x2 <= 400 and 0 <= y1 < y2 <= 360
            # The box centre is inside every shape: it shows the object's colour.
            pixel = image.getpixel((int((x1 + x2) / 2), int((y1 + y2) / 2)))
            assert isinstance(pixel, tuple)
            assert all(abs(p - c) <= 12 for p, c in zip(pixel, COLOURS[obj.colour], strict=True))


# --- the server ----------------------------------------------------------------------------


class _ImageCollector(HTMLParser):
    """Every <img> in order, with the figcaption / caption paragraph that follows it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base_href: str | None = None
        self.images: list[dict[str, str | None]] = []
        self._capturing: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "base":
            self.base_href = attributes.get("href")
        elif tag == "img":
            self.images.append(attributes)
        elif tag == "figcaption" or (tag == "p" and attributes.get("class") == "caption"):
            self._capturing = []

    def handle_data(self, data: str) -> None:
        if self._capturing is not None:
            self._capturing.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._capturing is not None and tag in ("figcaption", "p"):
            self.images[-1]["surrounding"] = "".join(self._capturing)
            self._capturing = None


def _resolve(image: dict[str, str | None], page_url: str, base_href: str | None) -> str:
    """The URL a careful extractor picks: data-src over src, the largest srcset candidate."""
    base = urljoin(page_url, base_href) if base_href else page_url
    if image.get("srcset"):
        candidates = [c.strip().split() for c in (image["srcset"] or "").split(",")]
        src = max(candidates, key=lambda c: float(c[1][:-1]))[0]
    else:
        src = image.get("data-src") or image.get("src") or ""
    return src if src.startswith("data:") else urljoin(base, src)


def test_every_page_serves_the_images_and_captions_of_the_ground_truth(
    server: DemoWebServer, default_site: DemoSite
) -> None:
    status, _, index = _fetch(server.index_url)
    assert status == 200
    assert all(f'href="{path}"'.encode() in index for path in default_site.page_paths)
    references = {ref.ref_id: ref for ref in default_site.ground_truth.references}
    charsets_seen = set()
    for page in default_site.ground_truth.pages:
        status, headers, body = _fetch(server.url(page.path))
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        text = body.decode(
            {"Shift_JIS": "shift_jis", "windows-1252": "cp1252"}.get(page.charset, "utf-8")
        )
        assert page.charset in text
        charsets_seen.add(page.charset)
        collector = _ImageCollector()
        collector.feed(text)
        assert collector.base_href == page.base_href
        assert len(collector.images) == len(page.ref_ids), page.path
        for image, ref_id in zip(collector.images, page.ref_ids, strict=True):
            ref = references[ref_id]
            resolved = _resolve(image, server.url(page.path), collector.base_href)
            assert resolved == (ref.url if ref.url.startswith("data:") else server.url(ref.url))
            caption = image.get("alt") or image.get("title") or image.get("surrounding")
            assert (caption or "") == ref.caption, (page.path, ref_id)
    assert charsets_seen == {"utf-8", "windows-1252", "Shift_JIS"}
    assert any(page.malformed for page in default_site.ground_truth.pages)


def test_clean_image_decodes_at_its_ground_truth_size(
    server: DemoWebServer, default_site: DemoSite
) -> None:
    for image_format in ("jpeg", "png", "webp"):
        ref = _first(default_site, NoiseKind.CLEAN, image_format=image_format, source="page")
        status, headers, body = _fetch(server.url(ref.url))
        assert status == 200 and headers["Content-Type"] == f"image/{image_format}"
        with Image.open(io.BytesIO(body)) as image:
            image.load()
            assert image.size == (ref.width, ref.height)
            assert min(image.size) >= 300


def test_cc_list_rows_are_in_the_ground_truth(
    server: DemoWebServer, default_site: DemoSite
) -> None:
    status, headers, body = _fetch(server.cc_list_url)
    assert status == 200 and "tab-separated" in headers["Content-Type"]
    rows = [line.split("\t") for line in body.decode("utf-8").splitlines()]
    truth = {(r["url"], r["caption"]) for r in server.ground_truth_records() if r["list"] == "cc"}
    assert len(rows) == len(truth) == default_site.config.n_images // 4
    assert {(url, caption) for caption, url in rows} == truth
    found = next(
        r for r in server.ground_truth_records() if r["list"] == "cc" and r["status"] == 200
    )
    assert _fetch(found["url"])[0] == 200
    missing = next(
        r for r in server.ground_truth_records() if r["list"] == "cc" and r["status"] == 404
    )
    assert _fetch(missing["url"])[0] == 404


def test_sbu_files_are_line_aligned_with_the_ground_truth(server: DemoWebServer) -> None:
    urls = _fetch(server.sbu_urls_url)[2].decode("utf-8").splitlines()
    captions = _fetch(server.sbu_captions_url)[2].decode("utf-8").splitlines()
    truth = [r for r in server.ground_truth_records() if r["list"] == "sbu"]
    assert len(urls) == len(captions) == len(truth)
    for record in truth:
        assert urls[record["list_line"]] == record["url"]
        assert captions[record["list_line"]] == record["caption"]
    duplicate = next(r for r in truth if "exact_duplicate" in r["noise"])
    assert duplicate["duplicate_of"].startswith("cc")
    assert _fetch(duplicate["url"])[2] == _fetch(duplicate["duplicate_of_url"])[2]


def test_not_found_is_404(server: DemoWebServer, default_site: DemoSite) -> None:
    ref = _first(default_site, NoiseKind.NOT_FOUND, source="page")
    assert _fetch(server.url(ref.url))[0] == 404
    assert _fetch(server.url("/no/such/path"))[0] == 404


def test_redirect_chain_ends_at_the_image_and_the_loop_never_ends(
    server: DemoWebServer, default_site: DemoSite
) -> None:
    chain = _first(default_site, NoiseKind.REDIRECT_CHAIN)
    visited, status, body = _follow(server.url(chain.url))
    assert visited[:-1] == [server.url(hop) for hop in chain.redirects]
    assert 2 <= len(chain.redirects) <= 3
    assert chain.final_url is not None and visited[-1] == server.url(chain.final_url)
    assert status == 200
    with Image.open(io.BytesIO(body)) as image:
        assert image.size == (chain.width, chain.height)
    loop = _first(default_site, NoiseKind.REDIRECT_LOOP)
    visited, status, _ = _follow(server.url(loop.url), max_hops=6)
    assert status == 302 and visited[0] == visited[2] == visited[4]


def test_opt_out_images_carry_x_robots_tag(server: DemoWebServer, default_site: DemoSite) -> None:
    for kind, tag in (
        (NoiseKind.X_ROBOTS_NOAI, "noai"),
        (NoiseKind.X_ROBOTS_NOIMAGEAI, "noimageai"),
    ):
        for ref in default_site.ground_truth.with_noise(kind):
            status, headers, body = _fetch(server.url(ref.url), method="HEAD")
            assert status == 200 and headers["X-Robots-Tag"] == tag and body == b""
            assert int(headers["Content-Length"]) > 0
    clean = _first(default_site, NoiseKind.CLEAN, source="page", image_format="jpeg")
    assert "X-Robots-Tag" not in _fetch(server.url(clean.url), method="HEAD")[1]


def test_robots_txt_disallows_the_private_images(
    server: DemoWebServer, default_site: DemoSite
) -> None:
    parser = urllib.robotparser.RobotFileParser()
    parser.parse(_fetch(server.url("/robots.txt"))[2].decode().splitlines())
    private = default_site.ground_truth.with_noise(NoiseKind.ROBOTS_DISALLOWED)
    assert len(private) == 2
    for ref in private:
        assert not parser.can_fetch("lait", server.url(ref.url))
        assert _fetch(server.url(ref.url))[0] == 200  # robots.txt is advice; the server serves
    clean = _first(default_site, NoiseKind.CLEAN, source="page")
    assert parser.can_fetch("lait", server.url(clean.url))


def test_damaged_images_fail_to_decode(server: DemoWebServer, default_site: DemoSite) -> None:
    truncated = _first(default_site, NoiseKind.TRUNCATED_IMAGE)
    status, headers, body = _fetch(server.url(truncated.url))
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    with Image.open(io.BytesIO(body)) as image, pytest.raises(OSError):
        image.load()
    broken = _first(default_site, NoiseKind.BROKEN_IMAGE)
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(_fetch(server.url(broken.url))[2]))


def test_wrong_content_types(server: DemoWebServer, default_site: DemoSite) -> None:
    wrong = _first(default_site, NoiseKind.WRONG_CONTENT_TYPE)
    status, headers, body = _fetch(server.url(wrong.url))
    assert headers["Content-Type"].startswith("text/html")
    with Image.open(io.BytesIO(body)) as image:
        image.load()  # a real image behind the wrong header
    html_ref = _first(default_site, NoiseKind.HTML_AS_IMAGE)
    status, headers, body = _fetch(server.url(html_ref.url))
    assert status == 200 and body.lstrip().startswith(b"<!DOCTYPE html>")


def test_duplicates_match_their_originals(server: DemoWebServer, default_site: DemoSite) -> None:
    exact = _first(default_site, NoiseKind.EXACT_DUPLICATE)
    assert exact.duplicate_of_url is not None and exact.duplicate_of_url != exact.url
    assert _fetch(server.url(exact.url))[2] == _fetch(server.url(exact.duplicate_of_url))[2]

    def thumbnail(url: str) -> list[int]:
        with Image.open(io.BytesIO(_fetch(server.url(url))[2])) as image:
            return list(image.convert("RGB").resize((16, 16)).tobytes())

    def distance(a: list[int], b: list[int]) -> float:
        return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)

    clean = [
        r
        for r in default_site.ground_truth.with_noise(NoiseKind.CLEAN)
        if r.source == "page" and r.image_format == "jpeg"
    ]
    for near in default_site.ground_truth.with_noise(NoiseKind.NEAR_DUPLICATE):
        assert near.duplicate_of_url is not None
        stranger = next(r for r in clean if r.scene_id != near.scene_id)
        copy, original = thumbnail(near.url), thumbnail(near.duplicate_of_url)
        assert distance(copy, original) < 6 < distance(copy, thumbnail(stranger.url))
        assert min(near.width or 0, near.height or 0) >= 300


def test_slow_response_is_delayed() -> None:
    site = build_site(seed=1, n_images=SMALL, slow_delay_s=0.4, n_slow=1)
    slow = _first(site, NoiseKind.SLOW_RESPONSE)
    with DemoWebServer(site) as running:
        started = time.perf_counter()
        status, _, _ = _fetch(running.url(slow.url))
        assert status == 200 and time.perf_counter() - started >= 0.4
        assert running.requests_served == 1
    assert running.paths_requested() == {slow.url: 1}


def test_server_refuses_non_loopback_hosts(default_site: DemoSite) -> None:
    for host in ("0.0.0.0", "192.168.1.10", "localhost", "::1"):
        with pytest.raises(NonLoopbackHostError):
            DemoWebServer(default_site, host=host)


def test_serve_prints_its_urls_and_stops_on_request() -> None:
    out, stop = io.StringIO(), threading.Event()
    thread = threading.Thread(
        target=serve, kwargs={"port": 0, "n_images": SMALL, "out": out, "stop": stop}, daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 20
    while "Ctrl-C" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = out.getvalue().split()
    index_url = next(word for word in lines if word.endswith("/index.html"))
    assert any(word.endswith("/lists/cc.tsv") for word in lines)
    assert _fetch(index_url)[0] == 200
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_a_forced_watermark_style_draws_that_style_with_the_unforced_name_and_ink() -> None:
    import random

    from lait.demo_web.graphics import WATERMARK_STYLES, watermarked

    plain = Image.new("RGB", (320, 240), (90, 140, 60))
    unforced = np.asarray(watermarked(plain, random.Random("forced-style")), dtype=np.int16)
    forced = {
        style: np.asarray(
            watermarked(plain, random.Random("forced-style"), style=style), dtype=np.int16
        )
        for style in WATERMARK_STYLES
    }
    # The styles look different from each other; the unforced call drew one of them, and
    # forcing that one changes nothing (the same name, ink and opacity were drawn).
    pixels = list(forced.values())
    assert all(np.abs(a - b).mean() > 1.0 for i, a in enumerate(pixels) for b in pixels[i + 1 :])
    assert sum(np.array_equal(unforced, p) for p in pixels) == 1
    with pytest.raises(ValueError, match="unknown watermark style"):
        watermarked(plain, random.Random(0), style="tiled")
