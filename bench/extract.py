"""HTML extraction throughput: ours (stdlib `html.parser`) vs selectolax (Lexbor), same process.

    python bench/extract.py [--repeats 3] [--big-images 60000] [--smoke]

ours: `pipeline.extract.extract_page`, the call the crawl makes for every page: decode,
parse, find images (lazy-load attributes, srcset, <picture>), their alt/title/surrounding
text and the page's links, then `records_for_page` (URL resolution and canonicalisation,
screening, keys).
peer: selectolax's Lexbor HTML5 parser doing the same job: the same decode, then CSS
queries for `img`, `base`, `a`/`area`; each image's URL chosen by our `_choose_image_url`
(with its <picture>'s sources), its figcaption or nearest block's text as surrounding
text, then the same `records_for_page` and link resolution. So both sides pay for the
same record building; the difference is the parser and the walk.

Checked, not assumed: both sides must give the same set of (url, alt caption) pairs and the
same links on every page; `same_candidates` says whether they did. Surrounding text is
not compared (selectolax gives an element's text, not our 300-character window round the
image, so those captions differ by design).

Inputs: the demo web's gallery pages (`build_site(seed=0, n_images=1200)`) and one
generated page with `--big-images` <img> tags in figures, paragraphs and <picture>s.
Last line: one JSON object with ratio (ours_per_s / peer_per_s; above 1 means ours is
faster), ours_per_s, peer_per_s (images per second), same_candidates, and the figures per
input, where walk_ratio is the same ratio for the parse and walk alone (before the shared
record building: URL resolution, screening, keys), i.e. the parsers' own difference.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selectolax.lexbor import LexborHTMLParser, LexborNode

from lait.demo_web import build_site
from lait.record import CaptionSource
from pipeline.extract import ImageSighting, extract_page, records_for_page
from pipeline.extract.charset import decode_html
from pipeline.extract.html import (
    _BLOCK_TAGS,
    _NOT_CONTEXT,
    MAX_SURROUNDING_CHARS,
    _base_url,
    _choose_image_url,
    _parse,
    _Picture,
    _resolved_links,
    page_sightings,
)
from pipeline.extract.image_screening import parse_dimension, style_dimensions

DEMO_BASE = "http://demo.test"
Extraction = tuple[int, set[tuple[str, str]], list[str]]


def ours(html: bytes, page_url: str) -> Extraction:
    """(images, (url, alt) pairs, links) from our extractor."""
    page = extract_page(html, page_url, source="bench")
    return _summary(page.records, page.links)


def peer(html: bytes, page_url: str) -> Extraction:
    """(images, (url, alt) pairs, links) from selectolax doing our extractor's job."""
    base_url, sightings, hrefs = peer_walk(html, page_url)
    records = records_for_page(sightings, page_url=page_url, base_url=base_url, source="bench")
    return _summary(records, _resolved_links(hrefs, base_url))


def ours_walk(html: bytes, page_url: str) -> tuple[str, list[ImageSighting], list[str]]:
    """Our parse and walk only (what `extract_page` does before building records)."""
    document, _ = decode_html(html, None)
    parser, _ = _parse(document)
    sightings = page_sightings(parser)
    return _base_url(page_url, parser.base_href), sightings, parser.hrefs


def peer_walk(html: bytes, page_url: str) -> tuple[str, list[ImageSighting], list[str]]:
    """selectolax's parse and walk only: base URL, image sightings, raw link hrefs."""
    document, _ = decode_html(html, None)
    tree = LexborHTMLParser(document)
    base = tree.css_first("base[href]")
    base_url = _base_url(page_url, base.attributes.get("href") if base is not None else None)
    texts: dict[int, str] = {}  # a block's text, once per block (a page-wide <main> is common)
    sightings = [_sighting(node, texts) for node in tree.css("img")]
    hrefs = [n.attributes.get("href") or "" for n in tree.css("a[href], area[href]")]
    return base_url, sightings, [h for h in hrefs if h]


def _text_of(node: LexborNode, texts: dict[int, str]) -> str:
    text = texts.get(node.mem_id)
    if text is None:
        text = texts[node.mem_id] = " ".join(node.text(separator=" ").split())
    return text


def _sighting(node: LexborNode, texts: dict[int, str]) -> ImageSighting:
    attrs = {name: value or "" for name, value in node.attributes.items()}
    picture: _Picture | None = None
    figure_caption = ""
    block_text = ""
    parent = node.parent
    while parent is not None and parent.tag not in ("body", "html", None):
        tag = parent.tag
        if tag == "picture" and picture is None:
            srcsets = [s.attributes.get("srcset") or "" for s in parent.css("source[srcset]")]
            picture = _Picture([s for s in srcsets if s])
        elif tag == "figure" and not figure_caption:
            caption = parent.css_first("figcaption")
            figure_caption = _text_of(caption, texts) if caption is not None else ""
        elif not block_text and tag in _BLOCK_TAGS and tag not in _NOT_CONTEXT:
            block_text = _text_of(parent, texts)
        parent = parent.parent
    surrounding = (figure_caption or block_text)[:MAX_SURROUNDING_CHARS]
    style_width, style_height = style_dimensions(attrs.get("style"))
    width = parse_dimension(attrs.get("width"))
    height = parse_dimension(attrs.get("height"))
    return ImageSighting(
        raw_url=_choose_image_url(attrs, picture),
        alt=attrs.get("alt", ""),
        title=attrs.get("title", ""),
        surrounding=surrounding,
        width=width if width is not None else style_width,
        height=height if height is not None else style_height,
        css_class=attrs.get("class", ""),
    )


def _summary(records: list, links: list[str]) -> Extraction:
    pairs = {(r.url, r.caption) for r in records if r.caption_source is CaptionSource.ALT}
    images = len({r.url for r in records})
    return images, pairs, links


def big_page(n_images: int, seed: int = 0) -> bytes:
    """One page with `n_images` <img> tags in the shapes real galleries use."""
    rng = random.Random(seed)
    words = [
        "red",
        "blue",
        "cat",
        "dog",
        "tree",
        "river",
        "city",
        "night",
        "market",
        "bridge",
        "old",
        "new",
        "small",
    ]
    parts = ["<!doctype html><html><head><title>big</title></head><body><main>"]
    for i in range(n_images):
        alt = " ".join(rng.choices(words, k=rng.randint(2, 8)))
        kind = i % 4
        if kind == 0:
            parts.append(
                f'<figure><img src="/img/{i}.jpg" alt="{alt}" width="640" height="480">'
                f"<figcaption>Figure {i}: {alt}</figcaption></figure>"
            )
        elif kind == 1:
            parts.append(
                f"<p>Some text about {alt} before "
                f'<img src="https://cdn.example/p/{i}.png?w=800&amp;h=600" alt="{alt}">'
                f' and after, <a href="/page/{i}.html">more</a>.</p>'
            )
        elif kind == 2:
            parts.append(
                f'<picture><source srcset="/img/{i}-800.webp 800w, /img/{i}-1600.webp 1600w">'
                f'<img src="/img/{i}-small.jpg" alt="{alt}" title="photo {i}"></picture>'
            )
        else:
            parts.append(
                f'<div class="card"><img data-src="/lazy/{i}.jpg" src="/spacer.gif" '
                f'alt="{alt}" class="lazy"><span>{alt}</span></div>'
            )
    parts.append("</main></body></html>")
    return "\n".join(parts).encode()


def _time(extract: Callable[[bytes, str], object], pages: list[tuple[bytes, str]]) -> float:
    started = time.perf_counter()
    for html, url in pages:
        extract(html, url)
    return time.perf_counter() - started


def measure(name: str, pages: list[tuple[bytes, str]], repeats: int) -> dict:
    """Best-of-`repeats` images per second of both sides on `pages`, and whether they agree."""
    same = True
    images = 0
    for html, url in pages:
        mine, theirs = ours(html, url), peer(html, url)
        images += mine[0]
        if mine[1:] != theirs[1:]:
            same = False
    ours_s = min(_time(ours, pages) for _ in range(repeats))
    peer_s = min(_time(peer, pages) for _ in range(repeats))
    ours_walk_s = min(_time(ours_walk, pages) for _ in range(repeats))
    peer_walk_s = min(_time(peer_walk, pages) for _ in range(repeats))
    result = {
        "pages": len(pages),
        "images": images,
        "ours_per_s": round(images / ours_s, 1),
        "peer_per_s": round(images / peer_s, 1),
        "ratio": round(peer_s / ours_s, 3),
        "same_candidates": same,
        "walk_ratio": round(peer_walk_s / ours_walk_s, 3),
    }
    print(
        f"{name}: {len(pages)} pages, {images} images: ours {result['ours_per_s']:.0f}/s, "
        f"selectolax {result['peer_per_s']:.0f}/s, ratio {result['ratio']:.2f}x, "
        f"same candidates: {same}; parse and walk only: ours {images / ours_walk_s:.0f}/s, "
        f"selectolax {images / peer_walk_s:.0f}/s, ratio {result['walk_ratio']:.2f}x"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big-images", type=int, default=60_000)
    parser.add_argument("--smoke", action="store_true", help="small inputs, one repeat")
    args = parser.parse_args(argv)
    n_site, n_big, repeats = (
        (200, 2_000, 1) if args.smoke else (1200, args.big_images, args.repeats)
    )
    site = build_site(seed=0, n_images=n_site)
    demo = [(site.body(p, DEMO_BASE), DEMO_BASE + p) for p in site.page_paths]
    big = [(big_page(n_big), "http://big.test/gallery/index.html")]
    figures = {
        "demo": measure("demo pages", demo, repeats),
        "big": measure("big page", big, repeats),
    }
    ours_s = sum(f["images"] / f["ours_per_s"] for f in figures.values())
    peer_s = sum(f["images"] / f["peer_per_s"] for f in figures.values())
    images = sum(f["images"] for f in figures.values())
    summary = {
        "ratio": round(peer_s / ours_s, 3),
        "ours_per_s": round(images / ours_s, 1),
        "peer_per_s": round(images / peer_s, 1),
        "same_candidates": all(f["same_candidates"] for f in figures.values()),
        "peer": "selectolax 1.0.2 (Lexbor)",
        **figures,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
