"""What a caption looks like under each kind of caption noise."""

from __future__ import annotations

import random

from lait.demo_web.noise import NoiseKind
from lait.demo_web.scenes import Scene, describe_scene, random_scene
from lait.demo_web.translations import describe_scene_in

FILENAME_CAPTIONS: tuple[str, ...] = (
    "IMG_{n4}.jpg",
    "DSC{n5}.JPG",
    "P{n7}.JPG",
    "image{n3}.png",
    "2019{n4}_{n6}.jpg",
    "photo-{n3}.webp",
)

BOILERPLATE_CAPTIONS: tuple[str, ...] = (
    "click here",
    "image",
    "logo",
    "thumbnail",
    "photo",
    "picture",
    "banner",
    "untitled",
    "view larger",
    "placeholder",
)


def published_caption(
    kind: NoiseKind, scene: Scene, true_caption: str, rng: random.Random, language: str = "en"
) -> str:
    """The caption as published beside `scene`: `true_caption`, or what noise `kind` makes.

    Mismatched: the true caption of a different random scene. Filename: a camera or CMS file
    name. Boilerplate: a generic UI word. Non-English: a true caption in `language`. Too short:
    one word of the true caption (a colour or a shape). Other kinds leave the caption true.
    """
    if kind is NoiseKind.MISMATCHED_CAPTION:
        while True:
            other = random_scene(rng, scene.width, scene.height)
            if [o.phrase for o in other.objects] != [o.phrase for o in scene.objects]:
                return describe_scene(other, rng)
    if kind is NoiseKind.FILENAME_CAPTION:
        numbers = {f"n{k}": f"{rng.randrange(10**k):0{k}d}" for k in (3, 4, 5, 6, 7)}
        return rng.choice(FILENAME_CAPTIONS).format(**numbers)
    if kind is NoiseKind.BOILERPLATE_CAPTION:
        return rng.choice(BOILERPLATE_CAPTIONS)
    if kind is NoiseKind.NON_ENGLISH_CAPTION:
        return describe_scene_in(scene, language, rng)
    if kind is NoiseKind.TOO_SHORT_CAPTION:
        first = scene.objects[0]
        return rng.choice((first.colour, first.shape))
    return true_caption
