"""Generate the demo web: gallery pages, images, caption lists and robots.txt, with ground
truth. `build_site(seed)` is deterministic: same arguments, byte-identical site.

Planning comes first (which page holds which image reference, which references carry which
noise), then rendering: each image is drawn from a random scene, encoded, and registered at
its path with the status, headers and delay its noise asks for; its `<img>` markup and its
ground-truth `ImageReference` are made together, so they cannot disagree.
"""

from __future__ import annotations

import posixpath
import random
import zlib
from dataclasses import dataclass, field, replace
from itertools import cycle

from PIL import Image

from lait.demo_web.caption_lists import format_cc_tsv, format_sbu_files
from lait.demo_web.graphics import GRAPHIC_KINDS, render_graphic, watermarked
from lait.demo_web.ground_truth import BASE_PLACEHOLDER, GroundTruth, ImageReference, PageInfo
from lait.demo_web.image_files import (
    CONTENT_TYPES,
    EXTENSIONS,
    NEAR_DUPLICATE_TRANSFORMS,
    PLACEHOLDER_DATA_URI,
    TRANSPARENT_GIF,
    data_uri,
    encode_image,
    near_duplicate,
    random_bytes,
    truncated,
)
from lait.demo_web.noise import CAPTION_NOISE, CONTENT_NOISE, NoiseKind
from lait.demo_web.noisy_captions import published_caption
from lait.demo_web.pages import ImageItem, PageLayout, render_index, render_page
from lait.demo_web.scenes import Scene, describe_scene, random_scene, render_scene
from lait.demo_web.site import DemoSite, Resource, SiteConfig
from lait.demo_web.translations import LANGUAGES
from lait.record import CaptionSource

MIN_IMAGES = 40
IMAGES_PER_PAGE = 8
MIN_SIDE, MAX_SIDE = 320, 512
HTML_CONTENT_TYPE = "text/html; charset=utf-8"
REDIRECT_CONTENT_TYPE = "text/plain; charset=utf-8"  # with an empty body

# Noise kinds injected at `noise_rate` of page images each; the rest have fixed counts.
RATE_KINDS: tuple[NoiseKind, ...] = (
    NoiseKind.MISMATCHED_CAPTION,
    NoiseKind.FILENAME_CAPTION,
    NoiseKind.BOILERPLATE_CAPTION,
    NoiseKind.NON_ENGLISH_CAPTION,
    NoiseKind.TOO_SHORT_CAPTION,
    NoiseKind.TOO_SMALL,
    NoiseKind.BROKEN_IMAGE,
    NoiseKind.TRUNCATED_IMAGE,
    NoiseKind.WRONG_CONTENT_TYPE,
    NoiseKind.NOT_FOUND,
    NoiseKind.REDIRECT_CHAIN,
    NoiseKind.EXACT_DUPLICATE,
    NoiseKind.NEAR_DUPLICATE,
    NoiseKind.X_ROBOTS_NOAI,
)

ROBOTS_TXT = b"""# LAIT demo web
User-agent: *
Disallow: /private/

User-agent: BadBot
Disallow: /
"""


def build_site(
    seed: int = 0,
    n_images: int = 600,
    *,
    noise_rate: float = 0.025,
    slow_delay_s: float = 3.0,
    n_slow: int = 2,
) -> DemoSite:
    """Generate the demo web for `seed`, with `n_images` image references on gallery pages.

    Deterministic: the same arguments give a byte-identical site. Nothing is cached on disk.
    """
    config = SiteConfig(
        seed=seed,
        n_images=n_images,
        noise_rate=noise_rate,
        slow_delay_s=slow_delay_s,
        n_slow=n_slow,
    )
    if n_images < MIN_IMAGES:
        raise ValueError(
            f"n_images={n_images} is too few to hold every noise kind; use at least {MIN_IMAGES}"
        )
    if not 0.0 <= noise_rate <= 0.05:
        raise ValueError(f"noise_rate={noise_rate} must be between 0 and 0.05")
    if n_slow < 0 or slow_delay_s < 0:
        raise ValueError("n_slow and slow_delay_s must not be negative")
    return _SiteBuilder(config).build()


@dataclass
class _Slot:
    """One content image reference on a gallery page, while the site is being planned."""

    index: int
    page: int
    kind: NoiseKind = NoiseKind.CLEAN
    language: str = "en"
    original: _Slot | None = None  # for duplicates
    is_original: bool = False
    # Filled when rendered:
    path: str = ""
    body: bytes = b""
    scene: Scene | None = None
    scene_id: int = -1
    image_id: str = ""


@dataclass
class _PagePlan:
    number: int
    layout: PageLayout
    slots: list[_Slot] = field(default_factory=list)
    gallery: list[tuple[ImageItem, ImageReference]] = field(default_factory=list)
    header: list[tuple[ImageItem, ImageReference]] = field(default_factory=list)
    footer: list[tuple[ImageItem, ImageReference]] = field(default_factory=list)


def _page_path(number: int) -> str:
    return f"/pages/{number:03d}.html"


class _SiteBuilder:
    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.rng = random.Random(f"lait-demo-web/{config.seed}")
        self.resources: dict[str, Resource] = {}
        self._next_scene_id = 0
        self._transforms = cycle(NEAR_DUPLICATE_TRANSFORMS)
        self._languages = cycle(LANGUAGES)
        self.n_pages = max(5, config.n_images // IMAGES_PER_PAGE)

    # --- plan ---------------------------------------------------------------------------

    def build(self) -> DemoSite:
        pages = self._plan_pages(self.n_pages)
        slots = self._plan_slots(pages)
        for slot in slots:
            if slot.original is None:
                self._add_slot(slot, pages[slot.page - 1])
        for slot in slots:
            if slot.original is not None:
                self._add_duplicate(slot, pages[slot.page - 1])
        self._add_markup_noise(pages)
        page_refs = self._write_pages(pages)
        list_refs = self._add_lists()
        self._add_fixed_resources(pages)
        references = [replace(ref, ref_id=i) for i, ref in enumerate(page_refs + list_refs)]
        page_infos = self._page_infos(pages, references)
        return DemoSite(
            config=self.config,
            resources=dict(sorted(self.resources.items())),
            ground_truth=GroundTruth(references, page_infos),
        )

    def _plan_pages(self, n_pages: int) -> list[_PagePlan]:
        rng = self.rng
        numbers = list(range(1, n_pages + 1))
        # Page 2 is windows-1252, page 3 Shift_JIS; the rest UTF-8, some with a <base>,
        # a few malformed.
        ordinary = numbers[3:]
        base_pages = set(rng.sample(ordinary, max(1, n_pages // 4)))
        malformed = set(rng.sample(ordinary, max(2, n_pages // 25)))
        plans = []
        for number in numbers:
            others = [n for n in numbers if n != number]
            neighbours = {n for n in (number - 1, number + 1) if 1 <= n <= n_pages}
            linked = sorted(neighbours | set(rng.sample(others, min(2, len(others)))))
            links = (
                ("/index.html", "Home"),
                *((_page_path(n), f"Gallery {n:03d}") for n in linked),
            )
            charset, language = "utf-8", "en"
            title = f"Shape gallery {number:03d}"
            if number == 2:
                charset, title = "windows-1252", f"Galerie des formes – {number:03d}"
            elif number == 3:
                charset, language, title = "Shift_JIS", "ja", f"図形ギャラリー {number:03d}"
            layout = PageLayout(
                path=_page_path(number),
                title=title,
                charset=charset,
                base_href="/static/" if number in base_pages else None,
                malformed=number in malformed,
                links=links,
                language=language,
            )
            plans.append(_PagePlan(number=number, layout=layout))
        return plans

    def _noise_counts(self) -> dict[NoiseKind, int]:
        n = self.config.n_images
        counts = {kind: max(1, round(n * self.config.noise_rate)) for kind in RATE_KINDS}
        counts[NoiseKind.HTML_AS_IMAGE] = max(1, round(n * 0.003))
        counts[NoiseKind.REDIRECT_LOOP] = 1
        counts[NoiseKind.X_ROBOTS_NOIMAGEAI] = 1
        counts[NoiseKind.ROBOTS_DISALLOWED] = 2
        counts[NoiseKind.SLOW_RESPONSE] = self.config.n_slow
        return counts

    def _plan_slots(self, pages: list[_PagePlan]) -> list[_Slot]:
        rng, n = self.rng, self.config.n_images
        sizes = [n // len(pages) + (1 if i < n % len(pages) else 0) for i in range(len(pages))]
        for _ in range(len(pages)):  # uneven pages, as real galleries are
            src, dst = rng.randrange(len(pages)), rng.randrange(len(pages))
            moved = min(rng.randint(1, 3), sizes[src] - 4)
            if moved > 0:
                sizes[src] -= moved
                sizes[dst] += moved
        slots: list[_Slot] = []
        for page, size in zip(pages, sizes, strict=True):
            for _ in range(size):
                slot = _Slot(index=len(slots), page=page.number)
                slots.append(slot)
                page.slots.append(slot)

        counts = self._noise_counts()
        n_duplicates = counts[NoiseKind.EXACT_DUPLICATE] + counts[NoiseKind.NEAR_DUPLICATE]
        if sum(counts.values()) + n_duplicates > n:
            raise ValueError(f"n_images={n} is too few for the noise asked; raise n_images")
        # The special-charset pages each get a non-English caption in a language they encode.
        reserved = {pages[1].slots[0].index: "fr", pages[2].slots[0].index: "ja"}
        assigned: dict[int, NoiseKind] = dict.fromkeys(reserved, NoiseKind.NON_ENGLISH_CAPTION)
        order = [i for i in rng.sample(range(n), n) if i not in assigned]
        pool = iter(order)
        for kind, count in counts.items():
            already = sum(1 for k in assigned.values() if k is kind)
            for _ in range(count - already):
                assigned[next(pool)] = kind
        for index, kind in assigned.items():
            slots[index].kind = kind
            if kind is NoiseKind.NON_ENGLISH_CAPTION:
                slots[index].language = reserved.get(index) or next(self._languages)

        clean = [s for s in slots if s.kind is NoiseKind.CLEAN]
        duplicates = [
            s for s in slots if s.kind in (NoiseKind.EXACT_DUPLICATE, NoiseKind.NEAR_DUPLICATE)
        ]
        for duplicate, original in zip(duplicates, rng.sample(clean, len(duplicates)), strict=True):
            duplicate.original = original
            original.is_original = True
        self._assign_content_noise(slots)
        return slots

    def _assign_content_noise(self, slots: list[_Slot]) -> None:
        """Turn some clean images (never a duplicate's original) into non-natural or
        watermarked ones, by a random stream of their own: the rest of the site stays what
        it was before these kinds existed, so its other figures keep their meaning."""
        rng = random.Random(f"lait-demo-web/{self.config.seed}/content")
        count = max(1, round(self.config.n_images * self.config.noise_rate))
        clean = [s for s in slots if s.kind is NoiseKind.CLEAN and not s.is_original]
        chosen = rng.sample(clean, min(len(clean), 2 * count))
        for i, slot in enumerate(chosen):
            slot.kind = NoiseKind.NON_NATURAL_IMAGE if i < count else NoiseKind.WATERMARKED_IMAGE

    # --- page images ----------------------------------------------------------------------

    def _new_scene_id(self) -> int:
        self._next_scene_id += 1
        return self._next_scene_id - 1

    def _texture_seed(self, image_id: str) -> int:
        return zlib.crc32(f"{self.config.seed}/{image_id}".encode())

    def _url_form(self, path: str, layout: PageLayout) -> str:
        if layout.base_href is not None and path.startswith(layout.base_href):
            return "base-relative"
        weights = {"absolute-path": 65, "page-relative": 25, "absolute-url": 10}
        if layout.base_href is not None:
            del weights["page-relative"]  # relative URLs there resolve against the <base>
        if layout.charset != "utf-8":
            del weights["absolute-url"]  # those pages are served as-is, never templated
        return self.rng.choices(list(weights), list(weights.values()))[0]

    @staticmethod
    def _href(path: str, form: str, layout: PageLayout) -> str:
        if form == "base-relative" and layout.base_href is not None:
            return path[len(layout.base_href) :]
        if form == "page-relative":
            return posixpath.relpath(path, posixpath.dirname(layout.path))
        if form == "absolute-url":
            return BASE_PLACEHOLDER + path
        return path

    def _caption_markup(
        self, slot: _Slot, caption: str
    ) -> tuple[CaptionSource, list[tuple[str, str]], str | None, dict[str, str | None]]:
        """Where the caption goes: (source, attributes, caption element, raw texts)."""
        rng = self.rng
        if slot.kind in (NoiseKind.FILENAME_CAPTION, NoiseKind.BOILERPLATE_CAPTION):
            roll = rng.random() * 0.72  # alt or title, as such captions are found
        else:
            roll = rng.random()
        if roll < 0.6:
            texts: dict[str, str | None] = {"alt": caption, "title": None, "surrounding": None}
            return CaptionSource.ALT, [("alt", caption)], None, texts
        if roll < 0.72:
            texts = {"alt": "", "title": caption, "surrounding": None}
            return CaptionSource.TITLE, [("alt", ""), ("title", caption)], None, texts
        element = "figcaption" if roll < 0.88 else "p"
        attributes = [("alt", "")] if rng.random() < 0.5 else []
        texts = {"alt": "" if attributes else None, "title": None, "surrounding": caption}
        return CaptionSource.SURROUNDING, attributes, element, texts

    def _add_slot(self, slot: _Slot, page: _PagePlan) -> None:
        """Render one content image, register what the server answers, record the ref."""
        rng, kind, layout = self.rng, slot.kind, page.layout
        slot.image_id = image_id = f"p{slot.index:06d}"
        if kind is NoiseKind.TOO_SMALL:
            width, height = rng.randint(80, 200), rng.randint(80, 200)
        else:
            width, height = rng.randint(MIN_SIDE, MAX_SIDE), rng.randint(MIN_SIDE, MAX_SIDE)
        scene = random_scene(rng, width, height)
        if kind is NoiseKind.TRUNCATED_IMAGE or slot.is_original:
            image_format = "jpeg"
        else:
            image_format = rng.choices(("jpeg", "png", "webp"), (8, 1, 1))[0]
        if kind is NoiseKind.ROBOTS_DISALLOWED:
            directory = "/private/img/"
        elif layout.base_href is not None:
            directory = layout.base_href + "img/"
        else:
            directory = "/img/"
        path = f"{directory}{image_id}.{EXTENSIONS[image_format]}"
        image = render_scene(scene, texture_seed=self._texture_seed(image_id))
        graphic, graphic_caption = None, None
        if kind in CONTENT_NOISE:  # drawn from a stream of their own (see above)
            own = random.Random(f"lait-demo-web/{self.config.seed}/content/{image_id}")
            if kind is NoiseKind.NON_NATURAL_IMAGE:
                graphic = own.choice(GRAPHIC_KINDS)
                image, graphic_caption = render_graphic(graphic, width, height, own)
            else:
                image = watermarked(image, own)
        quality = rng.randint(78, 92)
        body = encode_image(image, image_format, quality)
        slot.path, slot.body, slot.scene, slot.scene_id = path, body, scene, self._new_scene_id()

        served = Resource(body, CONTENT_TYPES[image_format])
        is_served = True
        url, final_url = path, None
        redirects: tuple[str, ...] = ()
        status: int | None = 200
        content_type: str | None = CONTENT_TYPES[image_format]
        decodable = True
        x_robots_tag: str | None = None
        if kind is NoiseKind.NOT_FOUND:
            is_served, status, content_type, decodable = False, 404, None, False
        elif kind is NoiseKind.HTML_AS_IMAGE:
            others = [n for n in range(1, self.n_pages + 1) if n != page.number]
            url = _page_path(rng.choice(others))
            is_served, content_type, decodable = False, HTML_CONTENT_TYPE, False
        elif kind is NoiseKind.BROKEN_IMAGE:
            served = replace(served, body=random_bytes(rng))
            decodable = False
        elif kind is NoiseKind.TRUNCATED_IMAGE:
            served = replace(served, body=truncated(body))
        elif kind is NoiseKind.WRONG_CONTENT_TYPE:
            content_type = HTML_CONTENT_TYPE
            served = replace(served, content_type=content_type)
        elif kind is NoiseKind.SLOW_RESPONSE:
            served = replace(served, delay_s=self.config.slow_delay_s)
        elif kind in (NoiseKind.X_ROBOTS_NOAI, NoiseKind.X_ROBOTS_NOIMAGEAI):
            x_robots_tag = "noai" if kind is NoiseKind.X_ROBOTS_NOAI else "noimageai"
            served = replace(served, headers=(("X-Robots-Tag", x_robots_tag),))
        elif kind is NoiseKind.REDIRECT_CHAIN:
            hops = [f"/go/{image_id}"] + [
                f"/go/{image_id}/{k}" for k in range(2, rng.randint(3, 4))
            ]
            targets = [*hops[1:], BASE_PLACEHOLDER + path]
            for hop, target in zip(hops, targets, strict=True):
                self.resources[hop] = Resource(
                    content_type=REDIRECT_CONTENT_TYPE,
                    status=302,
                    redirect_to=target,
                    templated=True,
                )
            url, final_url, redirects = hops[0], path, tuple(hops)
        elif kind is NoiseKind.REDIRECT_LOOP:
            hops = [f"/go/{image_id}", f"/go/{image_id}/2"]
            for hop, target in ((hops[0], hops[1]), (hops[1], hops[0])):
                self.resources[hop] = Resource(
                    content_type=REDIRECT_CONTENT_TYPE, status=302, redirect_to=target
                )
            is_served, status, content_type, decodable = False, 302, None, False
            url, redirects = hops[0], tuple(hops)
        if is_served:
            self.resources[path] = served

        form = self._url_form(url, layout)
        attributes: list[tuple[str, str]] = []
        markup = "src"
        variant_urls: tuple[str, ...] = ()
        plain = kind is NoiseKind.CLEAN or kind in CAPTION_NOISE or kind in CONTENT_NOISE
        roll = rng.random()
        if plain and roll < 0.17:
            markup, attributes, variant_urls = self._srcset(
                image, image_format, quality, path, form, layout
            )
        elif roll < 0.32:
            markup = "data-src"
            attributes = [
                ("src", PLACEHOLDER_DATA_URI),
                ("data-src", self._href(url, form, layout)),
                ("class", "lazyload"),
            ]
        else:
            attributes = [("src", self._href(url, form, layout))]
            if rng.random() < 0.4:
                attributes += [("width", str(width)), ("height", str(height))]
        true_caption = describe_scene(scene, rng)
        caption = published_caption(kind, scene, true_caption, rng, slot.language)
        if graphic_caption is not None:  # the scene drawn above is not what the image shows
            true_caption = caption = graphic_caption
        source, caption_attributes, element, texts = self._caption_markup(slot, caption)
        item = ImageItem(
            attributes=tuple(attributes + caption_attributes),
            caption_element=element,
            caption_text=texts["surrounding"],
        )
        ref = ImageReference(
            ref_id=-1,
            source="page",
            page_url=layout.path,
            url=url,
            caption=caption,
            caption_source=source,
            noise=frozenset({kind}),
            scene_id=slot.scene_id if graphic is None else None,
            scene=scene if graphic is None else None,
            true_caption=true_caption,
            image_id=image_id,
            language=slot.language,
            graphic=graphic,
            html_src=self._href(url, form, layout),
            markup=markup,
            url_form=form,
            alt=texts["alt"],
            title=texts["title"],
            surrounding=texts["surrounding"],
            variant_urls=variant_urls,
            final_url=final_url,
            redirects=redirects,
            status=status,
            content_type=content_type,
            image_format=image_format if decodable else None,
            width=width if decodable else None,
            height=height if decodable else None,
            delay_s=served.delay_s if is_served else 0.0,
            x_robots_tag=x_robots_tag,
        )
        page.gallery.append((item, ref))

    def _srcset(
        self,
        image: Image.Image,
        image_format: str,
        quality: int,
        path: str,
        form: str,
        layout: PageLayout,
    ) -> tuple[str, list[tuple[str, str]], tuple[str, ...]]:
        """Smaller variants of `image` and the srcset markup offering them with the full one."""
        rng = self.rng
        width, height = image.size
        stem, extension = path.rsplit(".", 1)
        if rng.random() < 0.7:
            fractions = rng.choice(((0.4,), (0.4, 0.65), (0.5,), (0.33, 0.6)))
            variants = [
                (round(width * f), f"{stem}-{round(width * f)}w.{extension}") for f in fractions
            ]
            descriptors = [f"{w}w" for w, _ in variants] + [f"{width}w"]
            markup = "srcset-w"
        else:
            variants = [(width // 2, f"{stem}-1x.{extension}")]
            descriptors = ["1x", "2x"]
            markup = "srcset-x"
        for variant_width, variant_path in variants:
            size = (variant_width, max(1, round(height * variant_width / width)))
            small = image.resize(size, Image.Resampling.BILINEAR)
            body = encode_image(small, image_format, quality)
            self.resources[variant_path] = Resource(body, CONTENT_TYPES[image_format])
        urls = [p for _, p in variants] + [path]
        srcset = ", ".join(
            f"{self._href(u, form, layout)} {d}" for u, d in zip(urls, descriptors, strict=True)
        )
        attributes = [("src", self._href(urls[0], form, layout)), ("srcset", srcset)]
        if markup == "srcset-w":
            attributes.append(("sizes", "(max-width: 600px) 100vw, 50vw"))
        return markup, attributes, tuple(urls[:-1])

    def _add_duplicate(self, slot: _Slot, page: _PagePlan) -> None:
        """An exact or near copy of a clean image, under a URL of its own."""
        rng, layout = self.rng, page.layout
        original = slot.original
        assert original is not None and original.scene is not None
        slot.image_id = image_id = f"p{slot.index:06d}"
        directory = "/img/" if layout.base_href is None else layout.base_href + "img/"
        path = f"{directory}{image_id}.jpg"
        transform: str | None = None
        if slot.kind is NoiseKind.EXACT_DUPLICATE:
            body, scene = original.body, original.scene
        else:
            transform = next(self._transforms)
            body, scene = near_duplicate(original.body, original.scene, transform, rng)
        self.resources[path] = Resource(body, CONTENT_TYPES["jpeg"])
        form = self._url_form(path, layout)
        href = self._href(path, form, layout)
        lazy = rng.random() < 0.2
        attributes = (
            [("src", PLACEHOLDER_DATA_URI), ("data-src", href)] if lazy else [("src", href)]
        )
        true_caption = describe_scene(scene, rng)
        source, caption_attributes, element, texts = self._caption_markup(slot, true_caption)
        item = ImageItem(
            attributes=tuple(attributes + caption_attributes),
            caption_element=element,
            caption_text=texts["surrounding"],
        )
        ref = ImageReference(
            ref_id=-1,
            source="page",
            page_url=layout.path,
            url=path,
            caption=true_caption,
            caption_source=source,
            noise=frozenset({slot.kind}),
            scene_id=original.scene_id,
            scene=scene,
            true_caption=true_caption,
            image_id=image_id,
            html_src=href,
            markup="data-src" if lazy else "src",
            url_form=form,
            alt=texts["alt"],
            title=texts["title"],
            surrounding=texts["surrounding"],
            content_type=CONTENT_TYPES["jpeg"],
            image_format="jpeg",
            width=scene.width,
            height=scene.height,
            duplicate_of=original.image_id,
            duplicate_of_url=original.path,
            near_duplicate_transform=transform,
        )
        # Insert at a random place on the page, so copies do not cluster at the end.
        page.gallery.insert(rng.randint(0, len(page.gallery)), (item, ref))

    # --- markup the extractor should skip -------------------------------------------------

    def _add_markup_noise(self, pages: list[_PagePlan]) -> None:
        rng, n_pages = self.rng, len(pages)
        for page in rng.sample(pages, max(2, n_pages // 4)):
            attributes: tuple[tuple[str, str], ...] = (
                ("src", "/favicon.ico"),
                ("alt", "Shape Gallery"),
                ("width", "16"),
                ("height", "16"),
                ("class", "icon"),
            )
            ref = self._markup_ref(page, "/favicon.ico", "Shape Gallery", NoiseKind.ICON)
            ref = replace(ref, image_format="ico", width=16, height=16)
            page.header.append((ImageItem(attributes, css_class="brand"), ref))
        for page in rng.sample(pages, max(1, n_pages // 8)):
            attributes = (
                ("src", "/img/icons/share.png"),
                ("alt", "Share this picture"),
                ("width", "24"),
                ("height", "24"),
            )
            ref = self._markup_ref(
                page, "/img/icons/share.png", "Share this picture", NoiseKind.ICON
            )
            ref = replace(ref, image_format="png", width=24, height=24)
            page.footer.append((ImageItem(attributes, css_class="share"), ref))
        for page in rng.sample(pages, max(2, n_pages // 6)):
            url = f"/px.gif?p={page.number:03d}"
            attributes = (
                ("src", url),
                ("width", "1"),
                ("height", "1"),
                ("alt", ""),
                ("style", "display:none"),
            )
            ref = self._markup_ref(page, url, "", NoiseKind.TRACKING_PIXEL)
            ref = replace(ref, image_format="gif", width=1, height=1)
            page.footer.append((ImageItem(attributes, css_class="pixel"), ref))
        for page in rng.sample(pages, max(2, n_pages // 10)):
            scene = random_scene(rng, 48, 48)
            image = render_scene(scene, texture_seed=self._texture_seed(f"data{page.number}"))
            uri = data_uri(encode_image(image, "png"), CONTENT_TYPES["png"])
            caption = describe_scene(scene, rng)
            ref = self._markup_ref(page, uri, caption, NoiseKind.DATA_URI)
            ref = replace(
                ref,
                scene_id=self._new_scene_id(),
                scene=scene,
                true_caption=caption,
                image_format="png",
                width=48,
                height=48,
            )
            item = ImageItem((("src", uri), ("alt", caption)))
            page.gallery.insert(rng.randint(0, len(page.gallery)), (item, ref))

    @staticmethod
    def _markup_ref(page: _PagePlan, url: str, caption: str, kind: NoiseKind) -> ImageReference:
        is_data = url.startswith("data:")
        return ImageReference(
            ref_id=-1,
            source="page",
            page_url=page.layout.path,
            url=url,
            caption=caption,
            caption_source=CaptionSource.ALT,
            noise=frozenset({kind}),
            scene_id=None,
            scene=None,
            true_caption=None,
            html_src=url,
            url_form="data-uri" if is_data else "absolute-path",
            alt=caption,
            status=None if is_data else 200,
            content_type=None if is_data else CONTENT_TYPES[_format_of(url)],
        )

    # --- pages, lists and fixed resources -------------------------------------------------

    def _write_pages(self, pages: list[_PagePlan]) -> list[ImageReference]:
        references: list[ImageReference] = []
        for page in pages:
            body = render_page(
                page.layout,
                [item for item, _ in page.gallery],
                [item for item, _ in page.header],
                [item for item, _ in page.footer],
                self.rng,
            )
            layout = page.layout
            if layout.charset == "utf-8":
                content_type = HTML_CONTENT_TYPE
            elif layout.charset == "windows-1252":
                content_type = "text/html"  # only the <meta> says which charset
            else:
                content_type = f"text/html; charset={layout.charset}"
            self.resources[layout.path] = Resource(
                body, content_type, templated=layout.charset == "utf-8"
            )
            references += [ref for _, ref in page.header + page.gallery + page.footer]
        return references

    def _list_image(self, image_id: str, path: str, rng: random.Random) -> tuple[Scene, int, bytes]:
        width, height = rng.randint(MIN_SIDE, MAX_SIDE), rng.randint(MIN_SIDE, MAX_SIDE)
        scene = random_scene(rng, width, height)
        image = render_scene(scene, texture_seed=self._texture_seed(image_id))
        body = encode_image(image, "jpeg", rng.randint(80, 92))
        self.resources[path] = Resource(body, CONTENT_TYPES["jpeg"])
        return scene, self._new_scene_id(), body

    def _add_lists(self) -> list[ImageReference]:
        """The CC and SBU lists and their images; each list has noise of its own."""
        rng = self.rng
        n_list = max(10, self.config.n_images // 4)
        n_noise = max(1, round(n_list * 0.04))
        references: list[ImageReference] = []
        cc_bodies: list[tuple[ImageReference, bytes]] = []
        for list_name in ("cc", "sbu"):
            kinds = [NoiseKind.NOT_FOUND] * n_noise + [NoiseKind.MISMATCHED_CAPTION] * n_noise
            if list_name == "sbu":
                kinds += [NoiseKind.EXACT_DUPLICATE] * max(1, n_list // 50)
            kinds += [NoiseKind.CLEAN] * (n_list - len(kinds))
            rng.shuffle(kinds)
            rows: list[tuple[str, str]] = []
            for line, kind in enumerate(kinds):
                image_id = f"{list_name}{line:06d}"
                path = f"/{list_name}/{line:06d}.jpg"
                duplicate_of: ImageReference | None = None
                if kind is NoiseKind.EXACT_DUPLICATE:
                    duplicate_of, body = rng.choice(cc_bodies)
                    assert duplicate_of.scene is not None
                    scene, scene_id = duplicate_of.scene, duplicate_of.scene_id
                    self.resources[path] = Resource(body, CONTENT_TYPES["jpeg"])
                elif kind is NoiseKind.NOT_FOUND:
                    width, height = rng.randint(MIN_SIDE, MAX_SIDE), rng.randint(MIN_SIDE, MAX_SIDE)
                    scene, scene_id, body = (
                        random_scene(rng, width, height),
                        self._new_scene_id(),
                        b"",
                    )
                else:
                    scene, scene_id, body = self._list_image(image_id, path, rng)
                true_caption = describe_scene(scene, rng)
                caption = true_caption
                if kind is NoiseKind.MISMATCHED_CAPTION:
                    caption = published_caption(kind, scene, true_caption, rng)
                if list_name == "sbu" and rng.random() < 0.3:
                    caption = caption[0].upper() + caption[1:] + "."  # SBU captions are prose
                rows.append((caption, path))
                found = kind is not NoiseKind.NOT_FOUND
                ref = ImageReference(
                    ref_id=-1,
                    source=list_name,
                    page_url=None,
                    url=path,
                    caption=caption,
                    caption_source=CaptionSource.LIST,
                    noise=frozenset({kind}),
                    scene_id=scene_id,
                    scene=scene,
                    true_caption=true_caption,
                    image_id=image_id,
                    list_name=list_name,
                    list_line=line,
                    html_src=None,
                    markup="list",
                    url_form="absolute-url",
                    status=200 if found else 404,
                    content_type=CONTENT_TYPES["jpeg"] if found else None,
                    image_format="jpeg" if found else None,
                    width=scene.width if found else None,
                    height=scene.height if found else None,
                    duplicate_of=duplicate_of.image_id if duplicate_of else None,
                    duplicate_of_url=duplicate_of.url if duplicate_of else None,
                )
                references.append(ref)
                if list_name == "cc" and kind is NoiseKind.CLEAN:
                    cc_bodies.append((ref, body))
            if list_name == "cc":
                self.resources["/lists/cc.tsv"] = Resource(
                    format_cc_tsv(rows), "text/tab-separated-values; charset=utf-8", templated=True
                )
            else:
                urls, captions = format_sbu_files(rows)
                text = "text/plain; charset=utf-8"
                self.resources["/lists/sbu_urls.txt"] = Resource(urls, text, templated=True)
                self.resources["/lists/sbu_captions.txt"] = Resource(captions, text)
        return references

    def _add_fixed_resources(self, pages: list[_PagePlan]) -> None:
        self.resources["/robots.txt"] = Resource(ROBOTS_TXT, "text/plain; charset=utf-8")
        favicon = Image.new("RGB", (16, 16), (34, 78, 206))
        self.resources["/favicon.ico"] = Resource(
            encode_image(favicon, "ico"), CONTENT_TYPES["ico"]
        )
        share = Image.new("RGB", (24, 24), (38, 150, 62))
        self.resources["/img/icons/share.png"] = Resource(
            encode_image(share, "png"), CONTENT_TYPES["png"]
        )
        self.resources["/px.gif"] = Resource(TRANSPARENT_GIF, CONTENT_TYPES["gif"])
        index = render_index(
            "LAIT demo web: shape galleries",
            [(page.layout.path, page.layout.title) for page in pages],
        )
        self.resources["/index.html"] = Resource(index, HTML_CONTENT_TYPE)
        self.resources["/"] = Resource(index, HTML_CONTENT_TYPE)

    @staticmethod
    def _page_infos(pages: list[_PagePlan], references: list[ImageReference]) -> list[PageInfo]:
        ref_ids: dict[str, list[int]] = {}
        for ref in references:
            if ref.page_url is not None:
                ref_ids.setdefault(ref.page_url, []).append(ref.ref_id)
        return [
            PageInfo(
                path=page.layout.path,
                charset=page.layout.charset,
                base_href=page.layout.base_href,
                malformed=page.layout.malformed,
                links=tuple(href for href, _ in page.layout.links),
                ref_ids=tuple(ref_ids.get(page.layout.path, ())),
            )
            for page in pages
        ]


def _format_of(url: str) -> str:
    extension = url.split("?", 1)[0].rsplit(".", 1)[-1].lower()
    return {v: k for k, v in EXTENSIONS.items()}[extension]
