"""Image fingerprints: the 64-bit pHash as an int, its LSH bands, and a colour thumbnail.

The pHash (set at download, `imagehash.phash`, 16 hex digits) finds candidates; it is grey
and coarse, so two different flat pictures with a dark blob in the same place share it.
The 8x8 RGB thumbnails (of the whole picture and of two slight crops) check colour and
layout before two images are called the same.
"""

from __future__ import annotations

import io

import cv2
import imagehash
import numpy as np
from PIL import Image

from lait.image_decode import decode_image

HASH_BITS = 64
THUMBNAIL_SIDE = 8
THUMBNAIL_BYTES = THUMBNAIL_SIDE * THUMBNAIL_SIDE * 3
CROPS = (0.02, 0.04)  # per side, for the crop-tolerant colour check
THUMBNAILS = 1 + len(CROPS)
THUMBNAILS_BYTES = THUMBNAILS * THUMBNAIL_BYTES
PRE_REDUCED_SIDE = 64
_MAX_PIXELS = 89_478_485


def phash_int(phash: str) -> int:
    """The 16-hex-digit pHash string as an unsigned 64-bit int."""
    return int(phash, 16)


def hamming(a: int, b: int) -> int:
    """Bits that differ between two 64-bit hashes."""
    return (a ^ b).bit_count()


def band_slices(bands: int) -> list[tuple[int, int]]:
    """(shift, mask) of each of `bands` near-equal bit ranges covering all 64 bits."""
    sizes = [HASH_BITS // bands + (1 if i < HASH_BITS % bands else 0) for i in range(bands)]
    slices, start = [], 0
    for size in sizes:
        slices.append((HASH_BITS - start - size, (1 << size) - 1))
        start += size
    return slices


def band_values(phash: int, bands: int) -> list[tuple[int, int]]:
    """(band index, band value) keys: two hashes within `bands - 1` bits share at least one."""
    return [(i, (phash >> shift) & mask) for i, (shift, mask) in enumerate(band_slices(bands))]


def colour_thumbnail(image: bytes) -> bytes | None:
    """`colour_thumbnail_of_pixels` of encoded image bytes; None if they do not decode."""
    try:
        with Image.open(io.BytesIO(image)) as opened:
            opened.draft("RGB", (160, 160))  # JPEG: decode at reduced scale, much faster
            rgb = np.asarray(opened.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return colour_thumbnail_of_pixels(rgb)


def colour_thumbnail_of_pixels(pixels: np.ndarray, *, bgr: bool = False) -> bytes:
    """The image's 8x8 RGB area-averaged thumbnails (192 bytes each) of the whole picture and
    of it cropped by each of `CROPS` per side, concatenated. `pixels` is (h, w, 3) RGB, or BGR
    with `bgr` (OpenCV's order), or (h, w) grey.

    Comparing every crop of one with every crop of the other (`thumbnail_distance`) makes the
    colour check tolerate a copy cropped by a few percent per side, which moves the plain 8x8
    thumbnail as much as a different picture does (measured on the demo webs' crop copies).
    """
    height, width = pixels.shape[:2]
    # One area-averaging pass over the full picture, then the crops of that: averaging the
    # full-size picture once per crop cost three passes (about 1 ms for a 384 x 564 image;
    # this is under half). The reduced picture keeps its shorter side >= PRE_REDUCED_SIDE,
    # so a crop's edge moves by under one of its pixels (values within ~1 of the direct way).
    factor = max(1, min(height, width) // PRE_REDUCED_SIDE)
    if factor > 1:
        height, width = height // factor, width // factor
        pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)
    parts = []
    for crop in (0.0, *CROPS):
        dx, dy = round(width * crop), round(height * crop)
        box = pixels[dy : max(dy + 1, height - dy), dx : max(dx + 1, width - dx)]
        small = cv2.resize(box, (THUMBNAIL_SIDE, THUMBNAIL_SIDE), interpolation=cv2.INTER_AREA)
        if small.ndim == 2:
            small = np.repeat(small[:, :, np.newaxis], 3, axis=2)
        elif bgr:
            small = small[:, :, ::-1]
        parts.append(np.ascontiguousarray(small, dtype=np.uint8).tobytes())
    return b"".join(parts)


def thumbnail_distances(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Colour distance of row pairs of two (k, THUMBNAILS_BYTES) int16 arrays: the smallest
    mean absolute difference (0-255) over every crop of one against every crop of the other."""
    a = left.reshape(len(left), THUMBNAILS, 1, THUMBNAIL_BYTES)
    b = right.reshape(len(right), 1, THUMBNAILS, THUMBNAIL_BYTES)
    distances: np.ndarray = np.abs(a - b).mean(axis=3).min(axis=(1, 2))
    return distances


def thumbnail_distance(a: bytes, b: bytes) -> float:
    """Colour distance of two images' thumbnails (see `thumbnail_distances`)."""
    left = np.frombuffer(a, dtype=np.uint8).astype(np.int16).reshape(1, -1)
    right = np.frombuffer(b, dtype=np.uint8).astype(np.int16).reshape(1, -1)
    return float(thumbnail_distances(left, right)[0])


def image_fingerprint(data: bytes) -> tuple[int, bytes | None]:
    """(pHash as int, colour thumbnail) of encoded image bytes, hashed as the pipeline does.

    Raises `lait.image_decode.ImageRejected` when the bytes are not a usable image.
    """
    decoded = decode_image(data, _MAX_PIXELS)
    return phash_int(str(imagehash.phash(decoded.preview))), colour_thumbnail(data)
