"""Compositional scenes: one to three coloured shapes on a plain, lightly textured background.

A `Scene` is the ground truth of one demo image: what objects it holds, where (a tight pixel
box per object, so later stages can ground each object word in a region), and how it is laid
out (which fixes the spatial words of its captions). `render_scene` draws it; `describe_scene`
writes an English caption that is true of it.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 32, 36),
    "orange": (243, 128, 22),
    "yellow": (238, 204, 18),
    "green": (38, 150, 62),
    "blue": (34, 78, 206),
    "purple": (124, 48, 168),
    "pink": (236, 104, 176),
    "brown": (122, 76, 38),
    "black": (24, 24, 24),
    "cyan": (18, 182, 204),
}

SIZES: tuple[str, ...] = ("small", "large")

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "light grey": (206, 206, 204),
    "beige": (226, 216, 192),
    "pale blue": (200, 214, 230),
    "pale green": (204, 224, 204),
    "off-white": (238, 236, 230),
}

# How the objects are arranged; objects are stored in reading order (left to right, or top
# to bottom), so captions can name relations from the order alone.
LAYOUTS: tuple[str, ...] = ("single", "horizontal", "vertical")

Box = tuple[int, int, int, int]


def _star_outline(points: int = 5, inner_ratio: float = 0.45) -> list[tuple[float, float]]:
    outline = []
    for k in range(points * 2):
        radius = 1.0 if k % 2 == 0 else inner_ratio
        angle = -math.pi / 2 + k * math.pi / points
        outline.append((radius * math.cos(angle), radius * math.sin(angle)))
    xs = [x for x, _ in outline]
    ys = [y for _, y in outline]
    # Normalise to the unit square so the object's box is tight around the drawn star.
    return [
        ((x - min(xs)) / (max(xs) - min(xs)), (y - min(ys)) / (max(ys) - min(ys)))
        for x, y in outline
    ]


# Polygon outlines in the unit square, each touching all four sides (tight boxes).
_OUTLINES: dict[str, list[tuple[float, float]]] = {
    "triangle": [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)],
    "diamond": [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)],
    "hexagon": [(0.25, 0.0), (0.75, 0.0), (1.0, 0.5), (0.75, 1.0), (0.25, 1.0), (0.0, 0.5)],
    "cross": [
        (0.34, 0.0),
        (0.66, 0.0),
        (0.66, 0.34),
        (1.0, 0.34),
        (1.0, 0.66),
        (0.66, 0.66),
        (0.66, 1.0),
        (0.34, 1.0),
        (0.34, 0.66),
        (0.0, 0.66),
        (0.0, 0.34),
        (0.34, 0.34),
    ],
    "star": _star_outline(),
}


@dataclass(frozen=True)
class SceneObject:
    """One shape in a scene. `box` is (x1, y1, x2, y2) in the scene's pixels, x2/y2 exclusive."""

    shape: str
    colour: str
    size: str
    box: Box

    @property
    def centre(self) -> tuple[float, float]:
        """The centre of the object's box, in pixels."""
        x1, y1, x2, y2 = self.box
        return ((x1 + x2) / 2, (y1 + y2) / 2)

    @property
    def phrase(self) -> str:
        """The English noun phrase without article, e.g. 'large red circle'."""
        return f"{self.size} {self.colour} {self.shape}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form."""
        return {
            "shape": self.shape,
            "colour": self.colour,
            "size": self.size,
            "box": list(self.box),
        }


@dataclass(frozen=True)
class Scene:
    """What one image shows: objects in reading order on a `width` x `height` canvas."""

    width: int
    height: int
    layout: str
    background: str
    objects: tuple[SceneObject, ...]

    def resized(self, width: int, height: int) -> Scene:
        """The same scene on a canvas of another size (boxes scaled)."""
        sx, sy = width / self.width, height / self.height
        objects = tuple(
            replace(
                obj,
                box=(
                    round(obj.box[0] * sx),
                    round(obj.box[1] * sy),
                    max(round(obj.box[2] * sx), round(obj.box[0] * sx) + 1),
                    max(round(obj.box[3] * sy), round(obj.box[1] * sy) + 1),
                ),
            )
            for obj in self.objects
        )
        return replace(self, width=width, height=height, objects=objects)

    def cropped(self, box: Box) -> Scene:
        """The part of the scene inside `box` (x1, y1, x2, y2); object boxes are clipped."""
        left, top, right, bottom = box
        width, height = right - left, bottom - top

        def clip(value: int, upper: int) -> int:
            return min(max(value, 0), upper)

        objects = tuple(
            replace(
                obj,
                box=(
                    clip(obj.box[0] - left, width),
                    clip(obj.box[1] - top, height),
                    clip(obj.box[2] - left, width),
                    clip(obj.box[3] - top, height),
                ),
            )
            for obj in self.objects
        )
        return replace(self, width=width, height=height, objects=objects)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (boxes in this scene's pixels)."""
        return {
            "width": self.width,
            "height": self.height,
            "layout": self.layout,
            "background": self.background,
            "objects": [obj.to_dict() for obj in self.objects],
        }


# Object side as a fraction of the canvas's shorter side, by how many objects share it.
_LARGE_FRACTION = {1: 0.55, 2: 0.42, 3: 0.34}
_SMALL_TO_LARGE = 0.5


def random_scene(rng: random.Random, width: int = 400, height: int = 400) -> Scene:
    """A random scene of 1-3 objects with distinct shapes, laid out without overlap."""
    count = rng.choice((1, 1, 2, 2, 2, 3, 3))
    if count == 1:
        layout = "single"
    elif count == 3:
        # Three objects go along the canvas's longer side so each has room.
        layout = "horizontal" if width >= height else "vertical"
    else:
        layout = rng.choice(("horizontal", "vertical"))
    shapes = rng.sample(SHAPES, count)
    colours = list(COLOURS)
    shorter = min(width, height)
    margin = max(4, shorter // 40)
    objects = []
    for i, shape in enumerate(shapes):
        if layout == "horizontal":
            cell = (width * i // count, 0, width * (i + 1) // count, height)
        elif layout == "vertical":
            cell = (0, height * i // count, width, height * (i + 1) // count)
        else:
            cell = (0, 0, width, height)
        size = rng.choice(SIZES)
        cell_side = min(cell[2] - cell[0], cell[3] - cell[1]) - 2 * margin
        side = shorter * _LARGE_FRACTION[count]
        if size == "small":
            side *= _SMALL_TO_LARGE
        side_px = max(8, min(int(side), cell_side))
        x1 = rng.randint(cell[0] + margin, cell[2] - margin - side_px)
        y1 = rng.randint(cell[1] + margin, cell[3] - margin - side_px)
        objects.append(
            SceneObject(
                shape=shape,
                colour=rng.choice(colours),
                size=size,
                box=(x1, y1, x1 + side_px, y1 + side_px),
            )
        )
    return Scene(
        width=width,
        height=height,
        layout=layout,
        background=rng.choice(list(BACKGROUNDS)),
        objects=tuple(objects),
    )


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject) -> None:
    x1, y1, x2, y2 = obj.box
    fill = COLOURS[obj.colour]
    right, bottom = max(x1, x2 - 1), max(y1, y2 - 1)
    if obj.shape == "circle":
        draw.ellipse((x1, y1, right, bottom), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((x1, y1, right, bottom), fill=fill)
    else:
        points = [(x1 + u * (right - x1), y1 + v * (bottom - y1)) for u, v in _OUTLINES[obj.shape]]
        draw.polygon(points, fill=fill)


_TEXTURE_SIDE = 1024
_TEXTURE_SPAN = 24  # texture values are 0..24, applied as -12..+12


@functools.lru_cache(maxsize=1)
def _texture_field() -> Image.Image:
    """One large texture (smooth shading plus grain) that every render crops a window of.

    Cropping a shared field at a seeded offset costs a memcpy, where drawing fresh noise per
    image cost most of the demo web's build time; the offsets differ, so textures do too.
    """
    rng = np.random.default_rng(0x1A17)
    side = _TEXTURE_SIDE
    coarse = rng.integers(0, 15, size=(6, 6, 3), dtype=np.uint8)
    shading = Image.fromarray(coarse, "RGB").resize((side, side), Image.Resampling.BILINEAR)
    # Monochrome grain at half resolution, upsampled: closer to sensor noise than pixel noise.
    grain = rng.integers(0, 11, size=(side // 2, side // 2), dtype=np.uint8)
    grain_image = Image.fromarray(grain, "L").resize((side, side), Image.Resampling.NEAREST)
    return ImageChops.add(shading, grain_image.convert("RGB"))


def render_scene(
    scene: Scene, width: int | None = None, height: int | None = None, *, texture_seed: int = 0
) -> Image.Image:
    """Draw `scene` as an RGB image, at its own size unless `width`/`height` are given.

    Shapes are flat colours on a plain background; a smooth shading and a little grain lie
    over the whole picture (at most +-12 per channel), chosen by `texture_seed`: two renders
    of one scene with different seeds look alike but are not byte-identical, as two photos
    of one subject are not.
    """
    if width is not None or height is not None:
        scene = scene.resized(width or scene.width, height or scene.height)
    rng = np.random.default_rng(texture_seed)
    w, h = scene.width, scene.height
    tint = rng.integers(-6, 7, size=3)
    background = tuple(
        int(min(255, max(0, c + t)))
        for c, t in zip(BACKGROUNDS[scene.background], tint, strict=True)
    )
    image = Image.new("RGB", (w, h), background)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw_object(draw, obj)
    field = _texture_field()
    if w > _TEXTURE_SIDE or h > _TEXTURE_SIDE:
        texture = field.resize((w, h), Image.Resampling.BILINEAR)
    else:
        left = int(rng.integers(0, _TEXTURE_SIDE - w + 1))
        top = int(rng.integers(0, _TEXTURE_SIDE - h + 1))
        texture = field.crop((left, top, left + w, top + h))
    # clip(image + texture - 12), in C.
    return ImageChops.add(image, texture, scale=1.0, offset=-_TEXTURE_SPAN // 2)


def _a(phrase: str) -> str:
    return f"a {phrase}"


_SINGLE_TEMPLATES: tuple[str, ...] = (
    "{a}",
    "{a} on a plain background",
    "a photo of {a}",
    "a single {p} on its own",
)
_HORIZONTAL_PAIR_TEMPLATES: tuple[str, ...] = (
    "{a0} to the left of {a1}",
    "{a1} to the right of {a0}",
    "two objects: {a0} to the left of {a1}",
    "{a0} next to {a1}, which is on the right",
)
_VERTICAL_PAIR_TEMPLATES: tuple[str, ...] = (
    "{a0} above {a1}",
    "{a1} below {a0}",
    "two objects: {a0} above {a1}",
)
_HORIZONTAL_TRIPLE_TEMPLATES: tuple[str, ...] = (
    "{a0}, {a1} and {a2} from left to right",
    "three objects in a row: {a0}, {a1} and {a2}",
)
_VERTICAL_TRIPLE_TEMPLATES: tuple[str, ...] = (
    "{a0}, {a1} and {a2} from top to bottom",
    "three objects in a column: {a0}, {a1} and {a2}",
)


def describe_scene(scene: Scene, rng: random.Random) -> str:
    """An English caption that is true of `scene`, from one of a few templates.

    Every object is named by size, colour and shape; with two or three objects the caption
    also states their spatial order, e.g. 'a large red circle to the left of a small blue
    square'.
    """
    phrases = [obj.phrase for obj in scene.objects]
    fields = {f"a{i}": _a(p) for i, p in enumerate(phrases)}
    if len(phrases) == 1:
        return rng.choice(_SINGLE_TEMPLATES).format(a=fields["a0"], p=phrases[0])
    templates: tuple[str, ...]
    if len(phrases) == 2:
        templates = (
            _HORIZONTAL_PAIR_TEMPLATES if scene.layout == "horizontal" else _VERTICAL_PAIR_TEMPLATES
        )
    else:
        templates = (
            _HORIZONTAL_TRIPLE_TEMPLATES
            if scene.layout == "horizontal"
            else _VERTICAL_TRIPLE_TEMPLATES
        )
    return rng.choice(templates).format(**fields)
