"""Word-to-location targets from Localized Narratives: a point per word, then per token.

A Localized Narratives JSONL (Pont-Tuset et al., 2020; the demo web writes one for its scenes)
holds per image a `caption`, its words timed as spoken (`timed_caption`: utterance, start_time,
end_time) and the annotator's mouse `traces` ([[{x, y, t}, ...], ...], x and y in 0..1 of the
image). As PixelLLM does, a word's target is the mean of the trace points inside its time
window; a word with no point there gets none. Every word-piece of a word gets the word's point.

A stage source names its narratives (`{path: FOLDER, narratives: FILE.jsonl}`); a shard sample
has a narrative when its JSON's `url` (or its path, or the sample's key) is the `image_id`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from pretrain.shards import RawSample, metadata

Point = tuple[float, float]
Box = tuple[float, float, float, float]


class NarrativeError(ValueError):
    """A narratives file cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Narrative:
    """One image's narrative: its caption, and per utterance its character span in the caption,
    its point target (None: no trace point while it was said) and, where the file gives one,
    its true box (the demo web's `utterance_boxes`, for measuring point accuracy)."""

    image_id: str
    caption: str
    spans: tuple[tuple[int, int] | None, ...]
    points: tuple[Point | None, ...]
    boxes: tuple[Box | None, ...]


def word_points(record: dict[str, Any]) -> list[Point | None]:
    """The mean trace point (x, y) inside each utterance's time window, or None if none is."""
    trace = [p for segment in record.get("traces", []) for p in segment]
    if trace:
        t = np.array([p["t"] for p in trace], dtype=np.float64)
        xy = np.array([[p["x"], p["y"]] for p in trace], dtype=np.float64)
    points: list[Point | None] = []
    for utterance in record["timed_caption"]:
        if not trace:
            points.append(None)
            continue
        inside = (t >= utterance["start_time"]) & (t <= utterance["end_time"])
        if not inside.any():
            points.append(None)
            continue
        x, y = np.clip(xy[inside].mean(axis=0), 0.0, 1.0)
        points.append((float(x), float(y)))
    return points


def _spans(caption: str, utterances: Sequence[str]) -> list[tuple[int, int] | None]:
    """Each utterance's (start, end) characters in the caption, found in order."""
    spans: list[tuple[int, int] | None] = []
    lowered = caption.lower()
    cursor = 0
    for utterance in utterances:
        text = utterance.strip().lower()
        at = lowered.find(text, cursor) if text else -1
        if at < 0:
            spans.append(None)  # not in the caption as written: no token gets its point
            continue
        spans.append((at, at + len(text)))
        cursor = at + len(text)
    return spans


def parse_narrative(record: dict[str, Any]) -> Narrative:
    """A `Narrative` from one Localized Narratives record."""
    utterances = [u["utterance"] for u in record["timed_caption"]]
    boxes_raw = record.get("utterance_boxes") or [None] * len(utterances)
    return Narrative(
        image_id=str(record["image_id"]),
        caption=str(record["caption"]),
        spans=tuple(_spans(record["caption"], utterances)),
        points=tuple(word_points(record)),
        boxes=tuple(None if b is None else (b[0], b[1], b[2], b[3]) for b in boxes_raw),
    )


class NarrativeIndex:
    """Narratives by image id, found for shard samples by their URL, URL path or key."""

    def __init__(self, narratives: Iterable[Narrative]) -> None:
        self.by_id = {n.image_id: n for n in narratives}
        self.by_path: dict[str, Narrative] = {}
        for image_id, narrative in self.by_id.items():
            path = urlsplit(image_id).path
            if path and path != image_id:
                self.by_path.setdefault(path, narrative)

    def __len__(self) -> int:
        return len(self.by_id)

    @classmethod
    def load(cls, path: str) -> NarrativeIndex:
        """Read a Localized Narratives JSONL (local or any fsspec URL)."""
        import fsspec

        narratives = []
        with fsspec.open(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    narratives.append(parse_narrative(json.loads(line)))
                except (ValueError, KeyError, TypeError, IndexError) as error:
                    raise NarrativeError(
                        f"{path}:{number}: not a Localized Narratives record ({error!r}); each "
                        "line needs image_id, caption, timed_caption and traces"
                    ) from error
        return cls(narratives)

    def find(self, sample: RawSample) -> Narrative | None:
        """The narrative of a shard sample, or None."""
        url = metadata(sample).get("url")
        if isinstance(url, str):
            found = self.by_id.get(url) or self.by_path.get(urlsplit(url).path)
            if found is not None:
                return found
        return self.by_id.get(sample.key)


def token_targets(
    tokenizer: Any,
    captions: Sequence[str],
    narratives: Sequence[Narrative | None],
    max_length: int,
    length: int | None = None,
) -> dict[str, np.ndarray]:
    """Per-token targets of captions tokenised as the collator does (truncated, padded).

    Returns `points` (N x L x 2), `mask` (N x L, True where a token has a point), and `boxes`
    (N x L x 4) with `box_mask` where the narrative gives the word's true box. A row whose
    narrative is None, or whose caption is not the narrative's, gets no target. `length` pads
    or cuts L to match another encoding of the same captions.
    """
    enc = tokenizer(
        list(captions),
        max_length=max_length,
        truncation=True,
        padding="longest",
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    width = len(enc["input_ids"][0]) if length is None else length
    n = len(captions)
    points = np.zeros((n, width, 2), dtype=np.float32)
    mask = np.zeros((n, width), dtype=bool)
    boxes = np.zeros((n, width, 4), dtype=np.float32)
    box_mask = np.zeros((n, width), dtype=bool)
    for row, (caption, narrative) in enumerate(zip(captions, narratives, strict=True)):
        if narrative is None or caption != narrative.caption:
            continue
        offsets = enc["offset_mapping"][row]
        special = enc["special_tokens_mask"][row]
        for col, (start, end) in enumerate(offsets[:width]):
            if special[col] or end <= start:
                continue
            for word, span in enumerate(narrative.spans):
                if span is not None and span[0] <= start and end <= span[1]:
                    point, box = narrative.points[word], narrative.boxes[word]
                    if point is not None:
                        points[row, col], mask[row, col] = point, True
                    if box is not None:
                        boxes[row, col], box_mask[row, col] = box, True
                    break
    return {"points": points, "mask": mask, "boxes": boxes, "box_mask": box_mask}
