"""Images that are not photographs of a scene, and photographs that carry a watermark.

ImageBERT's LAIT drops non-natural images (charts, screenshots, slides, logos, text-only
banners) and LAION scores watermarks; the demo web serves both so that the content filters
have something to find. `render_graphic` draws one non-natural image of a given kind and
returns it with a caption that says what it shows (the caption is true: only the image
filter can tell these apart from scenes). `watermarked` lays a translucent text or logo
mark over a rendered scene, as stock-photo sites do.

Every draw takes its own `random.Random`, so adding these images to a site never shifts
the randomness the rest of the site is built from.
"""

from __future__ import annotations

import functools
import math
import random

from PIL import Image, ImageDraw, ImageFont

GRAPHIC_KINDS: tuple[str, ...] = (
    "bar_chart",
    "line_chart",
    "pie_chart",
    "screenshot",
    "slide",
    "logo",
    "text_banner",
)

_WORDS = [
    "sales",
    "revenue",
    "growth",
    "report",
    "quarterly",
    "results",
    "annual",
    "summary",
    "product",
    "launch",
    "settings",
    "account",
    "profile",
    "dashboard",
    "overview",
    "team",
    "meeting",
    "agenda",
    "roadmap",
    "welcome",
    "download",
    "install",
    "update",
    "login",
    "search",
    "contact",
    "support",
    "pricing",
    "features",
    "about",
    "news",
    "summer",
    "winter",
    "spring",
    "offer",
    "discount",
    "free",
    "shipping",
    "today",
    "only",
    "new",
    "arrivals",
]
_BRANDS = ("ACME", "NOVA", "ZENITH", "ORBIT", "PIXEL", "VERTEX", "LUMEN", "QUARK", "HELIX")
_MONTHS = ("January", "February", "March", "April", "May", "June")
_INK = ((24, 24, 24), (40, 48, 64), (255, 255, 255), (20, 60, 140), (120, 20, 20))
_PALETTE = (
    (214, 32, 36),
    (243, 128, 22),
    (238, 204, 18),
    (38, 150, 62),
    (34, 78, 206),
    (124, 48, 168),
    (18, 182, 204),
    (90, 90, 90),
)
_PAPER = ((255, 255, 255), (248, 248, 250), (236, 240, 246), (30, 34, 42), (250, 246, 236))

_GRAPHIC_CAPTIONS: dict[str, tuple[str, ...]] = {
    "bar_chart": (
        "a bar chart of {topic} by month",
        "bar chart showing {topic} from {m0} to {m1}",
        "chart of {topic} for the last six months",
    ),
    "line_chart": (
        "a line graph of {topic} over time",
        "line chart of {topic} from {m0} to {m1}",
        "graph showing how {topic} changed this year",
    ),
    "pie_chart": (
        "a pie chart of {topic} by region",
        "pie chart showing the share of {topic}",
    ),
    "screenshot": (
        "screenshot of the {topic} page",
        "a screenshot of the {topic} settings window",
        "screen capture of the {topic} dashboard",
    ),
    "slide": (
        "presentation slide about {topic}",
        "a slide from the {topic} presentation",
        "title slide of a talk on {topic}",
    ),
    "logo": (
        "the {brand} company logo",
        "logo of {brand} on a white background",
        "{brand} brand logo",
    ),
    "text_banner": (
        "banner announcing the {topic} offer",
        "a text banner that reads {topic}",
        "web banner for the {topic} event",
    ),
}


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font (no system fonts: the site must be the same anywhere)."""
    return ImageFont.load_default(size=size)


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(count))


def _axes(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], ink: tuple[int, ...]) -> None:
    left, top, right, bottom = box
    draw.line((left, top, left, bottom), fill=ink, width=2)
    draw.line((left, bottom, right, bottom), fill=ink, width=2)
    for k in range(1, 5):
        y = bottom - (bottom - top) * k // 5
        draw.line((left - 4, y, left, y), fill=ink, width=1)


def _title(draw: ImageDraw.ImageDraw, rng: random.Random, width: int, ink: tuple[int, ...]) -> int:
    size = max(14, width // 18)
    draw.text((width // 20, size // 2), _words(rng, 3).title(), fill=ink, font=_font(size))
    return size * 2


def _bar_chart(image: Image.Image, rng: random.Random) -> None:
    draw = ImageDraw.Draw(image)
    w, h = image.size
    ink = (30, 30, 30)
    top = _title(draw, rng, w, ink)
    box = (w // 8, top + 8, w - w // 16, h - h // 8)
    _axes(draw, box, ink)
    bars = rng.randint(4, 8)
    step = (box[2] - box[0]) // bars
    colour = rng.choice(_PALETTE)
    for i in range(bars):
        height = rng.uniform(0.15, 0.95) * (box[3] - box[1])
        x = box[0] + i * step + step // 5
        fill = colour if rng.random() < 0.8 else rng.choice(_PALETTE)
        draw.rectangle((x, box[3] - height, x + step * 3 // 5, box[3] - 1), fill=fill)
        label = _font(max(10, w // 40))
        draw.text((x, box[3] + 4), _MONTHS[i % 6][:3], fill=ink, font=label)


def _line_chart(image: Image.Image, rng: random.Random) -> None:
    draw = ImageDraw.Draw(image)
    w, h = image.size
    ink = (30, 30, 30)
    top = _title(draw, rng, w, ink)
    box = (w // 8, top + 8, w - w // 16, h - h // 8)
    _axes(draw, box, ink)
    for k in range(1, 5):  # grid lines
        y = box[3] - (box[3] - box[1]) * k // 5
        draw.line((box[0], y, box[2], y), fill=(210, 210, 210), width=1)
    for _ in range(rng.randint(1, 3)):
        points, value = [], rng.uniform(0.2, 0.8)
        for i in range(10):
            value = min(0.95, max(0.05, value + rng.uniform(-0.2, 0.2)))
            points.append((box[0] + (box[2] - box[0]) * i / 9, box[3] - value * (box[3] - box[1])))
        draw.line(points, fill=rng.choice(_PALETTE), width=3)


def _pie_chart(image: Image.Image, rng: random.Random) -> None:
    draw = ImageDraw.Draw(image)
    w, h = image.size
    ink = (30, 30, 30)
    top = _title(draw, rng, w, ink)
    radius = min(w // 3, (h - top) // 2 - 10)
    cx, cy = w * 2 // 5, top + (h - top) // 2
    shares = [rng.uniform(1, 4) for _ in range(rng.randint(3, 6))]
    start = rng.uniform(0, 360)
    colours = rng.sample(_PALETTE, len(shares))
    for share, colour in zip(shares, colours, strict=True):
        extent = 360 * share / sum(shares)
        draw.pieslice(
            (cx - radius, cy - radius, cx + radius, cy + radius),
            start,
            start + extent,
            fill=colour,
            outline=(255, 255, 255),
        )
        start += extent
    legend = _font(max(10, w // 36))
    for i, colour in enumerate(colours):
        y = top + 10 + i * (legend.size + 8 if hasattr(legend, "size") else 20)
        draw.rectangle((w * 4 // 5 - 18, y, w * 4 // 5 - 6, y + 12), fill=colour)
        draw.text((w * 4 // 5, y - 2), rng.choice(_WORDS), fill=ink, font=legend)


def _screenshot(image: Image.Image, rng: random.Random) -> None:
    draw = ImageDraw.Draw(image)
    w, h = image.size
    bar = max(18, h // 14)
    chrome = rng.choice(((60, 64, 72), (222, 224, 228), (36, 96, 190)))
    draw.rectangle((0, 0, w, bar), fill=chrome)
    for k in range(3):
        draw.ellipse(
            (8 + k * 18, bar // 4, 8 + k * 18 + bar // 2, bar * 3 // 4),
            fill=((236, 94, 86), (245, 190, 60), (96, 196, 80))[k],
        )
    side = w // 4 if rng.random() < 0.6 else 0
    if side:
        draw.rectangle((0, bar, side, h), fill=(240, 241, 244))
        for i in range(6):
            draw.text(
                (10, bar + 14 + i * 26),
                rng.choice(_WORDS).title(),
                fill=(60, 60, 60),
                font=_font(13),
            )
    size = max(12, w // 32)
    y = bar + 12
    x0 = side + 14
    draw.text((x0, y), _words(rng, 2).title(), fill=(20, 20, 20), font=_font(size + 6))
    y += size + 20
    while y < h - 30:
        if rng.random() < 0.2:  # a button or an input field
            bw = rng.randint(w // 6, w // 3)
            draw.rounded_rectangle(
                (x0, y, x0 + bw, y + size + 10),
                radius=4,
                fill=rng.choice(_PALETTE) if rng.random() < 0.5 else None,
                outline=(150, 150, 150),
            )
            draw.text((x0 + 8, y + 4), rng.choice(_WORDS), fill=(20, 20, 20), font=_font(size))
            y += size + 20
        else:
            draw.text((x0, y), _words(rng, rng.randint(3, 7)), fill=(70, 70, 70), font=_font(size))
            y += size + 8


def _slide(image: Image.Image, rng: random.Random) -> None:
    draw = ImageDraw.Draw(image)
    w, h = image.size
    accent = rng.choice(_PALETTE)
    draw.rectangle((0, 0, w, h // 5), fill=accent)
    size = max(16, w // 16)
    draw.text(
        (w // 16, h // 10 - size // 2),
        _words(rng, 3).title(),
        fill=(255, 255, 255),
        font=_font(size),
    )
    body = max(12, w // 28)
    y = h // 5 + body
    for _ in range(rng.randint(3, 6)):
        if y > h - body * 2:
            break
        draw.ellipse(
            (w // 12, y + body // 3, w // 12 + body // 2, y + body // 3 + body // 2), fill=accent
        )
        draw.text(
            (w // 12 + body, y), _words(rng, rng.randint(3, 6)), fill=(40, 40, 40), font=_font(body)
        )
        y += body * 2


def _logo(image: Image.Image, rng: random.Random) -> str:
    draw = ImageDraw.Draw(image)
    w, h = image.size
    brand = rng.choice(_BRANDS)
    colour = rng.choice(_PALETTE)
    r = min(w, h) // 5
    cx, cy = w // 2, h // 2 - r // 2
    mark = rng.choice(("ring", "disc", "square", "slash"))
    if mark == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=max(4, r // 4))
    elif mark == "disc":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        draw.text((cx, cy), brand[0], fill=(255, 255, 255), font=_font(r), anchor="mm")
    elif mark == "square":
        draw.rounded_rectangle((cx - r, cy - r, cx + r, cy + r), radius=r // 3, fill=colour)
        draw.text((cx, cy), brand[:2], fill=(255, 255, 255), font=_font(r * 2 // 3), anchor="mm")
    else:
        draw.polygon(
            [(cx - r, cy + r), (cx - r // 3, cy + r), (cx + r, cy - r), (cx + r // 3, cy - r)],
            fill=colour,
        )
    draw.text(
        (cx, cy + r + r // 2 + 10),
        brand,
        fill=rng.choice(_INK[:2] + _INK[3:]),
        font=_font(max(18, r * 2 // 3)),
        anchor="mm",
    )
    return brand


def _text_banner(image: Image.Image, rng: random.Random) -> str:
    draw = ImageDraw.Draw(image)
    w, h = image.size
    phrase = _words(rng, rng.randint(2, 3))
    lines = [phrase.upper(), _words(rng, rng.randint(2, 4))]
    size = max(20, w // 9)
    ink = (255, 255, 255) if sum(image.getpixel((0, 0))) < 400 else (20, 20, 20)  # type: ignore[arg-type]
    draw.text((w // 2, h // 2 - size // 2), lines[0], fill=ink, font=_font(size), anchor="mm")
    draw.text((w // 2, h // 2 + size), lines[1], fill=ink, font=_font(size // 2), anchor="mm")
    if rng.random() < 0.5:
        draw.rectangle((w // 12, h // 12, w - w // 12, h - h // 12), outline=ink, width=3)
    return phrase


def render_graphic(
    kind: str, width: int, height: int, rng: random.Random
) -> tuple[Image.Image, str]:
    """A non-natural image of `kind` (one of `GRAPHIC_KINDS`) and a true caption of it."""
    if kind not in GRAPHIC_KINDS:
        raise ValueError(f"unknown graphic kind {kind!r}; use one of {', '.join(GRAPHIC_KINDS)}")
    if kind == "text_banner":
        paper = rng.choice(_PALETTE + _PAPER)
    elif kind in ("screenshot", "slide", "logo"):
        paper = rng.choice(_PAPER[:3] + _PAPER[4:])
    else:
        paper = rng.choice(_PAPER[:3])
    image = Image.new("RGB", (width, height), paper)
    fields = {
        "topic": " ".join(rng.sample(_WORDS, 2)),
        "m0": _MONTHS[0],
        "m1": _MONTHS[-1],
        "brand": rng.choice(_BRANDS).title(),
    }
    if kind == "bar_chart":
        _bar_chart(image, rng)
    elif kind == "line_chart":
        _line_chart(image, rng)
    elif kind == "pie_chart":
        _pie_chart(image, rng)
    elif kind == "screenshot":
        _screenshot(image, rng)
    elif kind == "slide":
        _slide(image, rng)
    elif kind == "logo":
        fields["brand"] = _logo(image, rng).title()
    else:
        fields["topic"] = _text_banner(image, rng)
    caption = rng.choice(_GRAPHIC_CAPTIONS[kind]).format(**fields)
    return image, caption


WATERMARK_STYLES = ("grid", "diagonal", "band")


def watermarked(image: Image.Image, rng: random.Random, style: str | None = None) -> Image.Image:
    """`image` with a translucent watermark over it: a stock-photo grid of diagonal text
    ("grid"), one large diagonal word across the middle ("diagonal"), or a logo-and-name mark
    in a corner band ("band"). `style` forces one; the random choice is drawn all the same,
    so the mark's name, ink and opacity are those the unforced call would have drawn."""
    w, h = image.size
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    name = rng.choice(_BRANDS) + rng.choice(("", " PHOTO", " STOCK", " IMAGES"))
    light = rng.random() < 0.7
    alpha = rng.randint(170, 210)
    ink = (255, 255, 255, alpha) if light else (20, 20, 20, alpha)
    drawn = rng.choice(("grid", "grid", "diagonal", "band"))  # the grid, twice as often
    style = drawn if style is None else style
    if style not in WATERMARK_STYLES:
        raise ValueError(f"unknown watermark style {style!r}; one of {WATERMARK_STYLES}")
    if style == "grid":
        size = max(16, min(w, h) // rng.randint(8, 11))
        text = f"\u00a9 {name}"
        tile = Image.new("RGBA", (w * 2, h * 2), (0, 0, 0, 0))
        tile_draw = ImageDraw.Draw(tile)
        step_x, step_y = int(size * len(text) * 0.7), size * 3
        for row, y in enumerate(range(0, h * 2, step_y)):
            for x in range(-(row % 2) * step_x // 2, w * 2, step_x):
                tile_draw.text((x, y), text, fill=ink, font=_font(size))
        tile = tile.rotate(rng.uniform(20, 40), resample=Image.Resampling.BILINEAR)
        overlay = tile.crop((w // 2, h // 2, w // 2 + w, h // 2 + h))
    elif style == "diagonal":
        size = max(28, min(w, h) // 5)
        band = Image.new("RGBA", (w * 2, size * 2), (0, 0, 0, 0))
        ImageDraw.Draw(band).text((w, size), name, fill=ink, font=_font(size), anchor="mm")
        angle = math.degrees(math.atan2(h, w)) * rng.choice((1, -1))
        band = band.rotate(angle, expand=True, resample=Image.Resampling.BILINEAR)
        overlay.alpha_composite(band, ((w - band.width) // 2, (h - band.height) // 2))
    else:
        band_h = max(30, h // 6)
        y = h - band_h if rng.random() < 0.6 else 0
        draw.rectangle(
            (0, y, w, y + band_h),
            fill=(0, 0, 0, alpha // 2) if light else (255, 255, 255, alpha // 2),
        )
        r = band_h // 3
        draw.ellipse(
            (12, y + band_h // 2 - r, 12 + 2 * r, y + band_h // 2 + r), outline=ink, width=3
        )
        draw.text(
            (24 + 2 * r, y + band_h // 2),
            f"\u00a9 {name}  www.{name.split()[0].lower()}.example",
            fill=ink,
            font=_font(band_h // 2),
            anchor="lm",
        )
    return Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")
