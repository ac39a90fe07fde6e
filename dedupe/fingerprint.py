"""Image fingerprints: the 64-bit pHash as an int, its LSH bands, and a colour thumbnail.

The pHash (set at download, `imagehash.phash`, 16 hex digits) finds candidates; it is grey
and coarse, so two different flat pictures with a dark blob in the same place share it.
The 8x8 RGB thumbnail checks colour and layout before two images are called the same.
"""

from __future__ import annotations

import io

import imagehash
import numpy as np
from PIL import Image

from pipeline.image.decode import decode_image

HASH_BITS = 64
THUMBNAIL_SIDE = 8
THUMBNAIL_BYTES = THUMBNAIL_SIDE * THUMBNAIL_SIDE * 3
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
    """8x8 RGB box-filtered thumbnail (192 bytes), or None if the bytes do not decode."""
    try:
        with Image.open(io.BytesIO(image)) as opened:
            opened.draft("RGB", (64, 64))  # JPEG: decode at reduced scale, much faster
            small = opened.convert("RGB").resize(
                (THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BOX
            )
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return small.tobytes()


def thumbnail_distance(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two colour thumbnails, on the 0-255 scale."""
    left = np.frombuffer(a, dtype=np.uint8).astype(np.int16)
    right = np.frombuffer(b, dtype=np.uint8).astype(np.int16)
    return float(np.abs(left - right).mean())


def image_fingerprint(data: bytes) -> tuple[int, bytes | None]:
    """(pHash as int, colour thumbnail) of encoded image bytes, hashed as the pipeline does.

    Raises `pipeline.image.ImageRejected` when the bytes are not a usable image.
    """
    decoded = decode_image(data, _MAX_PIXELS)
    return phash_int(str(imagehash.phash(decoded.preview))), colour_thumbnail(data)
