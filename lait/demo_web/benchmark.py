"""A miniature retrieval benchmark in the Karpathy JSON format, from held-out demo scenes.

    write_demo_benchmark("out/demo/benchmark", seed=0, exclude=crawled_scenes(site))

writes `dataset_demo.json` (the format of Karpathy's `dataset_flickr30k.json` /
`dataset_coco.json`: `{"dataset", "images": [{"filename", "imgid", "split", "sentences":
[{"raw", "tokens", "imgid", "sentid"}]}]}`) and `images/*.jpg`, so that `lait evaluate CKPT
--karpathy-json .../dataset_demo.json --images .../images` and `lait finetune` read it exactly
as they read Flickr30k or COCO.

Held out: the benchmark's scenes come from their own random stream and texture seeds, and a
scene is skipped when its content (layout and every object's shape, colour and size: all a
caption can say) equals that of any scene the demo web serves (`exclude`, the crawled pages
and the CC/SBU lists), or of another benchmark scene. So no benchmark image, nor any image
with the same true captions, is in the crawled training data; and the `train` and `test`
splits are disjoint scenes. Each image has several different true captions (default 5).
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lait.demo_web.scenes import Scene, describe_scene, random_scene, render_scene

if TYPE_CHECKING:
    from lait.demo_web.site import DemoSite

BENCHMARK_JSON = "dataset_demo.json"
IMAGES_DIR = "images"

# More true phrasings than `describe_scene`'s templates, so an image gets several different
# captions (the Karpathy protocol's five per image) whatever its layout.
_EXTRA_TEMPLATES: dict[tuple[int, str], tuple[str, ...]] = {
    (1, "single"): ("a picture of {a0}", "an image showing {a0}"),
    (2, "horizontal"): ("{a1} with {a0} on its left", "{a0} and {a1}, side by side"),
    (2, "vertical"): ("{a0} with {a1} underneath", "{a1} beneath {a0}", "{a0} on top of {a1}"),
    (3, "horizontal"): (
        "{a0} on the left, {a1} in the middle and {a2} on the right",
        "a row of three shapes: {a0}, {a1} and {a2}",
        "from left to right: {a0}, {a1}, {a2}",
    ),
    (3, "vertical"): (
        "{a0} at the top, {a1} in the middle and {a2} at the bottom",
        "a column of three shapes: {a0}, {a1} and {a2}",
        "from top to bottom: {a0}, {a1}, {a2}",
    ),
}


def scene_content(scene: Scene) -> tuple[str, tuple[tuple[str, str, str], ...]]:
    """What a caption can say about a scene: its layout and each object's shape, colour, size."""
    return scene.layout, tuple((o.shape, o.colour, o.size) for o in scene.objects)


def crawled_scenes(site: DemoSite) -> list[Scene]:
    """Every scene the demo site serves (pages and lists): the benchmark's exclusions."""
    return [ref.scene for ref in site.ground_truth.references if ref.scene is not None]


def scene_captions(scene: Scene, rng: random.Random, count: int) -> list[str]:
    """`count` different true captions of `scene` (fewer if it has fewer phrasings)."""
    fields = {f"a{i}": f"a {obj.phrase}" for i, obj in enumerate(scene.objects)}
    extra = _EXTRA_TEMPLATES[(len(scene.objects), scene.layout)]
    phrasings = {describe_scene(scene, rng) for _ in range(40)}
    phrasings.update(template.format(**fields) for template in extra)
    ordered = sorted(phrasings)
    rng.shuffle(ordered)
    return ordered[:count]


def write_demo_benchmark(
    folder: str | Path,
    *,
    seed: int = 0,
    n_train: int = 300,
    n_test: int = 100,
    captions_per_image: int = 5,
    image_size: int = 128,
    exclude: Iterable[Scene] = (),
) -> Path:
    """Write the miniature benchmark into `folder`; return the path of its JSON file.

    `n_train` and `n_test` images (splits `train` and `test`, disjoint scenes), each with
    `captions_per_image` (>= 3) different true captions, none of a scene in `exclude`.
    Deterministic: the same arguments write the same files.
    """
    if captions_per_image < 3:
        raise ValueError("the benchmark gives each image 3 or more captions")
    out = Path(folder)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    seen = {scene_content(s) for s in exclude}
    rng = random.Random(f"lait-demo-benchmark/{seed}")
    images: list[dict[str, Any]] = []
    sentence_id = 0
    for split, count in (("test", n_test), ("train", n_train)):
        made = 0
        while made < count:
            scene = random_scene(rng, image_size, image_size)
            content = scene_content(scene)
            captions = scene_captions(scene, rng, captions_per_image)
            if content in seen or len(captions) < captions_per_image:
                continue
            seen.add(content)
            image_id = len(images)
            filename = f"demo_{split}_{made:05d}.jpg"
            texture = zlib.crc32(f"lait-demo-benchmark/{seed}/{filename}".encode())
            render_scene(scene, texture_seed=texture).save(
                out / IMAGES_DIR / filename, "JPEG", quality=90
            )
            sentences = []
            for caption in captions:
                sentences.append(
                    {
                        "raw": caption,
                        "tokens": caption.lower().replace(",", " ").replace(":", " ").split(),
                        "imgid": image_id,
                        "sentid": sentence_id,
                    }
                )
                sentence_id += 1
            images.append(
                {
                    "filename": filename,
                    "imgid": image_id,
                    "split": split,
                    "sentences": sentences,
                    "sentids": [s["sentid"] for s in sentences],
                    "scene": scene.to_dict(),
                }
            )
            made += 1
    path = out / BENCHMARK_JSON
    path.write_text(json.dumps({"dataset": "demo", "images": images}, indent=1), encoding="utf-8")
    return path
