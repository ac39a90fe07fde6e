"""The demo web as data: what the server answers for each path, and the ground truth.

A `DemoSite` (made by `lait.demo_web.generator.build_site`) maps URL paths to `Resource`s and
carries the `GroundTruth` of every image reference. URL layout (paths; the server adds its
base URL):

    /  and /index.html          index, linking every gallery page
    /pages/NNN.html             gallery pages (NNN from 001), ~n_images/8 of them
    /img/pNNNNNN.{jpg,png,webp} page images (and srcset variants "-{W}w" / "-1x")
    /static/img/pNNNNNN.*       page images of pages with <base href="/static/">
    /private/img/pNNNNNN.jpg    images robots.txt disallows
    /go/pNNNNNN[/2|/3]          redirect hops (chains, and one loop)
    /cc/NNNNNN.jpg, /sbu/NNNNNN.jpg         images of the caption lists
    /lists/cc.tsv               Conceptual Captions format: caption<TAB>url, no header
    /lists/sbu_urls.txt, /lists/sbu_captions.txt    SBU format: two line-aligned files
    /lists/narratives.jsonl     Localized Narratives (timed words + mouse traces) of its scenes
    /robots.txt, /favicon.ico, /img/icons/share.png, /px.gif
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from lait.demo_web.ground_truth import BASE_PLACEHOLDER, GroundTruth


@dataclass(frozen=True)
class SiteConfig:
    """What a demo site is built from. Same config, byte-identical site."""

    seed: int = 0
    n_images: int = 600  # image references on gallery pages; lists get n_images/4 each
    noise_rate: float = 0.025  # share of page images per rate-based noise kind
    slow_delay_s: float = 3.0  # delay of SLOW_RESPONSE images
    n_slow: int = 2


@dataclass(frozen=True)
class Resource:
    """What the server answers for one path.

    A `redirect_to` makes a 302 with that Location. With `templated`, every "{BASE}" in the
    body (and in `redirect_to`) is replaced by the server's base URL when served.
    """

    body: bytes = b""
    content_type: str = "application/octet-stream"
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    redirect_to: str | None = None
    templated: bool = False

    def render(self, base_url: str) -> bytes:
        """The body as served from `base_url`."""
        if not self.templated:
            return self.body
        return self.body.replace(BASE_PLACEHOLDER.encode(), base_url.rstrip("/").encode())

    def location(self, base_url: str) -> str | None:
        """The redirect target as served from `base_url`, or None."""
        if self.redirect_to is None:
            return None
        return self.redirect_to.replace(BASE_PLACEHOLDER, base_url.rstrip("/"))


@dataclass(frozen=True)
class DemoSite:
    """A generated demo web: resources by path, and the ground truth of its image refs."""

    config: SiteConfig
    resources: Mapping[str, Resource]
    ground_truth: GroundTruth

    index_path: str = "/index.html"
    robots_path: str = "/robots.txt"
    cc_list_path: str = "/lists/cc.tsv"
    sbu_urls_path: str = "/lists/sbu_urls.txt"
    sbu_captions_path: str = "/lists/sbu_captions.txt"
    narratives_path: str = "/lists/narratives.jsonl"

    @property
    def page_paths(self) -> list[str]:
        """The gallery pages' paths, in order."""
        return [page.path for page in self.ground_truth.pages]

    @functools.cached_property
    def narratives(self) -> Resource:
        """The Localized Narratives of the site's scenes (`lait.demo_web.narratives`).

        Built on first use, not with the site: most users of a site never ask for them.
        """
        from lait.demo_web.narratives import format_jsonl, narrative_records

        records = narrative_records(self.ground_truth.references, self.config.seed)
        return Resource(format_jsonl(records), "application/jsonl; charset=utf-8", templated=True)

    def lookup(self, path: str) -> Resource | None:
        """The resource for a request path (query and fragment ignored), or None (404)."""
        bare = path.split("#", 1)[0].split("?", 1)[0]
        if bare == self.narratives_path:
            return self.narratives
        return self.resources.get(bare)

    def body(self, path: str, base_url: str) -> bytes:
        """The body served for `path` from `base_url`; KeyError if the path is a 404."""
        resource = self.lookup(path)
        if resource is None:
            raise KeyError(path)
        return resource.render(base_url)

    def digest(self) -> str:
        """A SHA-256 over every path, status, header, delay, redirect and body."""
        hasher = hashlib.sha256()
        for path in sorted(self.resources):
            res = self.resources[path]
            meta = (path, res.status, res.content_type, res.headers, res.delay_s, res.redirect_to)
            hasher.update(repr(meta).encode())
            hasher.update(hashlib.sha256(res.body).digest())
        return hasher.hexdigest()
