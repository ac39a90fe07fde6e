"""The colour check tolerates slight crops (every crop of one thumbnail set against every crop
of the other) and still tells different pictures apart."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from dedupe import DedupeConfig
from dedupe.fingerprint import (
    THUMBNAIL_BYTES,
    THUMBNAILS_BYTES,
    colour_thumbnail,
    thumbnail_distance,
)

LIMIT = DedupeConfig().colour_threshold or 0.0


def smooth_jpeg(seed: int, side: int = 400) -> bytes:
    """Soft colour blobs (blurred random blocks), like a photo's colour layout."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize((side, side), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.filter(ImageFilter.GaussianBlur(10)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def cropped(data: bytes, share: float) -> bytes:
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    w, h = image.size
    dx, dy = round(w * share), round(h * share)
    buffer = io.BytesIO()
    image.crop((dx, dy, w - dx, h - dy)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def plain_distance(a: bytes, b: bytes) -> float:
    left = np.frombuffer(a[:THUMBNAIL_BYTES], dtype=np.uint8).astype(float)
    right = np.frombuffer(b[:THUMBNAIL_BYTES], dtype=np.uint8).astype(float)
    return float(np.abs(left - right).mean())


def test_a_slight_crop_passes_the_colour_check_a_different_picture_does_not() -> None:
    seeds = range(20)
    originals = {s: colour_thumbnail(smooth_jpeg(s)) for s in seeds}
    crops = {s: colour_thumbnail(cropped(smooth_jpeg(s), 0.03)) for s in seeds}
    assert all(t is not None and len(t) == THUMBNAILS_BYTES for t in originals.values())
    plain_misses = 0
    for s in seeds:
        a, b = originals[s], crops[s]
        assert a is not None and b is not None
        assert thumbnail_distance(a, b) <= LIMIT, s
        plain_misses += plain_distance(a, b) > LIMIT
        for other in seeds:
            c = originals[other]
            assert c is not None
            if other != s:
                assert thumbnail_distance(a, c) > 4 * LIMIT
    # what the plain 8x8 thumbnail alone misses: a crop of 3% per side moves the blobs of
    # these pictures across thumbnail cells
    assert plain_misses >= 15
