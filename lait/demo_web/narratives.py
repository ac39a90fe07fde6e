"""Localized Narratives of the demo web's scenes: each image described aloud while pointing.

Localized Narratives (Pont-Tuset et al., ECCV 2020) pair a spoken description of an image
with the annotator's mouse trace, both timed, so each word comes with the places the mouse was
while it was said. The demo web writes its scenes' narratives in that JSONL format, one per
served image with a scene:

    {"dataset_id": "lait_demo_web", "image_id": "http://127.0.0.1:PORT/img/p000012.jpg",
     "annotator_id": 3, "caption": "a large red circle to the left of a small blue square",
     "timed_caption": [{"utterance": "a", "start_time": 0.61, "end_time": 0.79}, ...],
     "traces": [[{"x": 0.412, "y": 0.530, "t": 0.4}, ...]],
     "utterance_boxes": [null, [0.10, 0.22, 0.48, 0.60], ...]}

`image_id` is the image's URL, which is the `url` in the shard sample's JSON, so narratives
join the dataset folder a crawl writes. x and y are normalised to the image (0..1), so they hold
after the pipeline resizes it (keeping its ratio). The annotator points at each object while
saying its words (size, colour and shape): every trace point inside such a word's time window
lies inside the object's box, with a hand's jitter; between objects the mouse travels across
the image. `utterance_boxes` is a LAIT extension, absent from real Localized Narratives: the
true box (normalised x1, y1, x2, y2) of the object each utterance names, or null, which is
what held-out point accuracy is measured against. Deterministic from the site seed.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lait.demo_web.ground_truth import BASE_PLACEHOLDER, ImageReference
from lait.demo_web.scenes import Scene

DATASET_ID = "lait_demo_web"
SAMPLE_INTERVAL_S = 0.08  # the trace's sampling period (12.5 Hz; a word lasts 0.14 s or more)
ANNOTATORS = 24
_MIN_BOX_PX = 3  # an object cropped to a sliver is not pointed at


@dataclass(frozen=True)
class _Word:
    text: str
    start: float
    end: float
    obj: int | None  # index of the scene object the word names, or None


def _words(caption: str, scene: Scene, rng: random.Random) -> list[_Word]:
    """The caption's words, timed as speech, each tied to the object whose phrase holds it."""
    spans: list[tuple[int, int, int]] = []  # (start char, end char, object)
    for k, obj in enumerate(scene.objects):
        x1, y1, x2, y2 = obj.box
        at = caption.find(obj.phrase)
        if at >= 0 and x2 - x1 >= _MIN_BOX_PX and y2 - y1 >= _MIN_BOX_PX:
            spans.append((at, at + len(obj.phrase), k))
    words = []
    t = rng.uniform(0.4, 1.2)  # the annotator looks before speaking
    for match in re.finditer(r"\S+", caption):
        core_end = match.start() + len(match.group().rstrip(",.:;"))  # "hexagon," names it too
        named = next((k for a, b, k in spans if a <= match.start() and core_end <= b), None)
        letters = len(match.group())
        duration = (0.1 + 0.055 * letters) * rng.uniform(0.8, 1.25)
        words.append(_Word(match.group(), round(t, 3), round(t + duration, 3), named))
        pause = rng.uniform(0.03, 0.2) + (0.25 if match.group()[-1] in ",:;." else 0.0)
        t += duration + pause
    return words


def _dwells(words: list[_Word]) -> list[tuple[float, float, int]]:
    """(start, end, object) of each stretch the mouse rests on an object.

    The mouse arrives a little before the object's first word and leaves a little after its
    last, never overlapping the next stretch, so every point while an object word is said is
    inside that object.
    """
    runs: list[list[Any]] = []
    for word in words:
        if word.obj is None:
            continue
        if runs and runs[-1][2] == word.obj:
            runs[-1][1] = word.end
        else:
            runs.append([word.start, word.end, word.obj])
    dwells = []
    for i, (start, end, obj) in enumerate(runs):
        before = start - (runs[i - 1][1] if i else 0.0)
        after = (runs[i + 1][0] - end) if i + 1 < len(runs) else 1.0
        lead = min(0.3, 0.3 * before)
        lag = min(0.25, 0.3 * after)
        dwells.append((start - lead, end + lag, obj))
    return dwells


def _trace(
    scene: Scene, words: list[_Word], rng: random.Random
) -> list[tuple[float, float, float]]:
    """(x, y, t) points in the scene's pixels: resting on each named object, moving between."""
    w, h = scene.width, scene.height
    dwells = _dwells(words)
    anchors = []
    for _, _, k in dwells:
        x1, y1, x2, y2 = scene.objects[k].box
        # Annotators point near the middle of an object, not at its edge.
        anchors.append(
            (
                rng.uniform(x1 + 0.3 * (x2 - x1), x2 - 0.3 * (x2 - x1)),
                rng.uniform(y1 + 0.3 * (y2 - y1), y2 - 0.3 * (y2 - y1)),
            )
        )
    start_point = (rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h)
    end_point = (rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h)
    t_end = words[-1].end + rng.uniform(0.2, 0.6)
    points: list[tuple[float, float, float]] = []
    offset = [0.0, 0.0]
    t = 0.0
    while t <= t_end:
        current = next((i for i, (a, b, _) in enumerate(dwells) if a <= t <= b), None)
        if current is not None:
            x1, y1, x2, y2 = scene.objects[dwells[current][2]].box
            side = min(x2 - x1, y2 - y1)
            # A hand's tremor around where it points: a damped random walk, kept inside.
            offset = [0.7 * o + rng.gauss(0.0, 0.08 * side) for o in offset]
            ax, ay = anchors[current]
            margin_x, margin_y = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
            x = min(max(ax + offset[0], x1 + margin_x), x2 - margin_x)
            y = min(max(ay + offset[1], y1 + margin_y), y2 - margin_y)
        else:
            previous = max((i for i, d in enumerate(dwells) if d[1] < t), default=None)
            following = min((i for i, d in enumerate(dwells) if d[0] > t), default=None)
            a_t, a_p = (
                (0.0, start_point) if previous is None else (dwells[previous][1], anchors[previous])
            )
            b_t, b_p = (
                (t_end, end_point)
                if following is None
                else (dwells[following][0], anchors[following])
            )
            u = (t - a_t) / max(b_t - a_t, 1e-6)
            u = u * u * (3 - 2 * u)  # ease in and out, as a hand moves
            x = a_p[0] + u * (b_p[0] - a_p[0]) + rng.gauss(0.0, 0.004 * w)
            y = a_p[1] + u * (b_p[1] - a_p[1]) + rng.gauss(0.0, 0.004 * h)
            offset = [0.0, 0.0]
        points.append((min(max(x, 0.0), w), min(max(y, 0.0), h), t))
        t = round(t + SAMPLE_INTERVAL_S, 3)
    return points


def narrate(scene: Scene, caption: str, image_id: str, rng: random.Random) -> dict[str, Any]:
    """The Localized Narrative of one scene described by `caption` (see the module docstring)."""
    words = _words(caption, scene, rng)
    if not words:
        raise ValueError(f"the caption of {image_id} has no words to narrate")
    trace = _trace(scene, words, rng)
    w, h = scene.width, scene.height

    def box(k: int | None) -> list[float] | None:
        if k is None:
            return None
        x1, y1, x2, y2 = scene.objects[k].box
        return [round(x1 / w, 4), round(y1 / h, 4), round(x2 / w, 4), round(y2 / h, 4)]

    return {
        "dataset_id": DATASET_ID,
        "image_id": image_id,
        "annotator_id": rng.randrange(ANNOTATORS),
        "caption": caption,
        "timed_caption": [
            {"utterance": word.text, "start_time": word.start, "end_time": word.end}
            for word in words
        ],
        "traces": [
            [{"x": round(x / w, 3), "y": round(y / h, 3), "t": round(t, 2)} for x, y, t in trace]
        ],
        "utterance_boxes": [box(word.obj) for word in words],
    }


def _narrated(ref: ImageReference) -> bool:
    """Whether a reference has a served, decodable image of a known scene to narrate."""
    return (
        ref.scene is not None
        and ref.true_caption is not None
        and ref.image_format is not None
        and not ref.url.startswith("data:")
    )


def narrative_records(
    references: Iterable[ImageReference], seed: int, base_url: str | None = None
) -> list[dict[str, Any]]:
    """The narratives of every served scene image, in reference order.

    `image_id` is the reference's URL: absolute on `base_url`, or with the "{BASE}"
    placeholder the server replaces by its own base URL when `base_url` is None. Each
    narrative's randomness is seeded by the site seed and the image's path alone, so adding
    images to a site leaves the others' narratives unchanged.
    """
    prefix = BASE_PLACEHOLDER if base_url is None else base_url.rstrip("/")
    records = []
    for ref in references:
        if not _narrated(ref):
            continue
        assert ref.scene is not None and ref.true_caption is not None
        rng = random.Random(f"lait-demo-web/{seed}/narrative/{ref.url}")
        records.append(narrate(ref.scene, ref.true_caption, prefix + ref.url, rng))
    return records


def format_jsonl(records: Iterable[dict[str, Any]]) -> bytes:
    """Records as JSON lines (UTF-8)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def write_narratives(
    path: str | Path, references: Iterable[ImageReference], seed: int, base_url: str
) -> int:
    """Write the narratives with absolute image URLs to `path`; return how many."""
    records = narrative_records(references, seed, base_url)
    Path(path).write_bytes(format_jsonl(records))
    return len(records)
