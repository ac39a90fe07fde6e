"""The demo web's ground truth: every image reference it holds and what is wrong with it.

Never served: it lives in Python objects and can be written as `ground_truth.jsonl`, one
reference per line. Paths are site-relative ("/img/p000123.jpg") unless a `base_url` is given,
in which case every path (and every "{BASE}" placeholder in raw markup) becomes absolute.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lait.demo_web.noise import NoiseKind
from lait.demo_web.scenes import Scene
from lait.record import CaptionSource

BASE_PLACEHOLDER = "{BASE}"


@dataclass(frozen=True)
class ImageReference:
    """One place the site offers an image with a caption: an `<img>` on a page or a list row.

    `url` is the reference resolved to a site path (srcset: the largest candidate; lazy
    images: `data-src`; relative URLs: against the page's `<base href>` or the page itself),
    or the data: URI itself. `caption` is the text as a parser reads it from
    `caption_source`: the alt text when non-empty, else the title, else the figcaption or
    the caption paragraph right after the image. `scene` has boxes in the pixels of the
    image served at `url` (at `final_url` for redirects).
    """

    ref_id: int
    source: str  # "page", "cc" or "sbu"
    page_url: str | None
    url: str
    caption: str
    caption_source: CaptionSource
    noise: frozenset[NoiseKind]
    scene_id: int | None
    scene: Scene | None
    true_caption: str | None
    image_id: str | None = None
    list_name: str | None = None
    list_line: int | None = None
    language: str = "en"
    html_src: str | None = None  # the attribute value as written ("{BASE}" not substituted)
    markup: str = "src"  # src | srcset-w | srcset-x | data-src | list
    url_form: str = "absolute-path"  # absolute-path | page-relative | base-relative | ...
    alt: str | None = None
    title: str | None = None
    surrounding: str | None = None
    variant_urls: tuple[str, ...] = ()
    final_url: str | None = None
    redirects: tuple[str, ...] = ()
    status: int | None = 200
    content_type: str | None = None
    image_format: str | None = None
    width: int | None = None
    height: int | None = None
    delay_s: float = 0.0
    x_robots_tag: str | None = None
    duplicate_of: str | None = None  # image_id of the original
    duplicate_of_url: str | None = None
    near_duplicate_transform: str | None = None  # requality | resize | crop
    graphic: str | None = None  # non-natural images: bar_chart, screenshot, logo, ...

    def to_dict(self, base_url: str | None = None) -> dict[str, Any]:
        """A JSON-serialisable form; with `base_url`, every site path made absolute."""

        def absolute(path: str | None) -> str | None:
            if path is None or base_url is None or not path.startswith("/"):
                return path
            return base_url.rstrip("/") + path

        html_src = self.html_src
        if html_src is not None and base_url is not None:
            html_src = html_src.replace(BASE_PLACEHOLDER, base_url.rstrip("/"))
        return {
            "ref_id": self.ref_id,
            "source": self.source,
            "page_url": absolute(self.page_url),
            "url": absolute(self.url),
            "caption": self.caption,
            "caption_source": str(self.caption_source),
            "list": self.list_name,
            "list_line": self.list_line,
            "noise": sorted(str(kind) for kind in self.noise),
            "language": self.language,
            "scene_id": self.scene_id,
            "scene": self.scene.to_dict() if self.scene is not None else None,
            "true_caption": self.true_caption,
            "image_id": self.image_id,
            "html_src": html_src,
            "markup": self.markup,
            "url_form": self.url_form,
            "alt": self.alt,
            "title": self.title,
            "surrounding": self.surrounding,
            "variant_urls": [absolute(u) for u in self.variant_urls],
            "final_url": absolute(self.final_url),
            "redirects": [absolute(u) for u in self.redirects],
            "status": self.status,
            "content_type": self.content_type,
            "image_format": self.image_format,
            "width": self.width,
            "height": self.height,
            "delay_s": self.delay_s,
            "x_robots_tag": self.x_robots_tag,
            "duplicate_of": self.duplicate_of,
            "duplicate_of_url": absolute(self.duplicate_of_url),
            "near_duplicate_transform": self.near_duplicate_transform,
            "graphic": self.graphic,
        }


@dataclass(frozen=True)
class PageInfo:
    """One HTML page: how it is encoded and built, what it links to, which refs it holds."""

    path: str
    charset: str
    base_href: str | None
    malformed: bool
    links: tuple[str, ...]
    ref_ids: tuple[int, ...]

    def to_dict(self, base_url: str | None = None) -> dict[str, Any]:
        """A JSON-serialisable form; with `base_url`, paths made absolute."""
        prefix = base_url.rstrip("/") if base_url is not None else ""
        return {
            "path": prefix + self.path,
            "charset": self.charset,
            "base_href": self.base_href,
            "malformed": self.malformed,
            "links": [prefix + link for link in self.links],
            "ref_ids": list(self.ref_ids),
        }


class GroundTruth:
    """Every image reference of a demo site, and its pages."""

    def __init__(self, references: Iterable[ImageReference], pages: Iterable[PageInfo]) -> None:
        self.references: tuple[ImageReference, ...] = tuple(references)
        self.pages: tuple[PageInfo, ...] = tuple(pages)

    def __len__(self) -> int:
        return len(self.references)

    def records(self, base_url: str | None = None) -> list[dict[str, Any]]:
        """One JSON-serialisable dict per image reference, in `ref_id` order."""
        return [ref.to_dict(base_url) for ref in self.references]

    def write_jsonl(self, path: str | Path, base_url: str | None = None) -> int:
        """Write `records()` as JSON lines to `path`; returns the number of lines."""
        lines = [json.dumps(record, ensure_ascii=False) for record in self.records(base_url)]
        Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return len(lines)

    def noise_counts(self) -> Counter[NoiseKind]:
        """How many references carry each noise kind (`CLEAN` counts the clean ones)."""
        return Counter(kind for ref in self.references for kind in ref.noise)

    def with_noise(self, kind: NoiseKind) -> list[ImageReference]:
        """The references labelled `kind`."""
        return [ref for ref in self.references if kind in ref.noise]

    def for_url(self, url: str) -> list[ImageReference]:
        """The references whose resolved `url` is the site path `url`."""
        return [ref for ref in self.references if ref.url == url]
