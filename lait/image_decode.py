"""Decode image bytes safely with Pillow and normalise them to 8-bit RGB(A), upright.

Pillow reads the header first, so the pixel count is checked before any pixel is decoded
(decompression bombs cost nothing). Full decoding then finds truncated files. Modes that
img2dataset's OpenCV-based resizer would mishandle (CMYK, 16-bit, palette, EXIF-rotated)
are converted here; images that need no conversion keep their original bytes.

The original bytes' EXIF tags are read here too (`read_exif`), before any conversion or
resizing drops them, in the form img2dataset stores in its `exif` column.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from dataclasses import dataclass

import exifread
import numpy as np
from PIL import Image, ImageOps

from lait.record import RejectReason

_PASS_THROUGH_FORMATS = {"JPEG", "PNG", "WEBP"}
_PASS_THROUGH_MODES = {"RGB", "L", "RGBA"}
PREVIEW_SIDE = 64  # enough for a 32x32 perceptual hash

# exifread logs "File format not recognized." for every PNG or WebP; img2dataset's main
# silences it the same way.
logging.getLogger("exifread").setLevel(logging.CRITICAL)


class ImageRejected(Exception):
    """An image cannot be used; `reason` says why in the pipeline's terms, and `value` and
    `limit` are the measure and the bound it failed, for reasons that compare."""

    def __init__(
        self,
        reason: RejectReason,
        detail: str,
        *,
        value: float | None = None,
        limit: float | None = None,
    ) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.value = value
        self.limit = limit


@dataclass(frozen=True)
class DecodedImage:
    """An upright, 8-bit image and the bytes to hand to the resizer.

    `preview` is the decoded image, possibly at a reduced scale (for hashing);
    `width` and `height` are always the full, upright size.
    """

    preview: Image.Image
    encoded: bytes  # the original bytes, or a lossless PNG when conversion was needed
    source_format: str
    width: int
    height: int
    exif: str | None = None  # `read_exif` of the original bytes


def read_exif(data: bytes) -> str | None:
    """The EXIF tags of image bytes as img2dataset's downloader stores them: a JSON object
    of exifread's tag names (`"Image Make"`, `"EXIF DateTimeOriginal"`) to their values as
    stripped strings, `"{}"` for an image without EXIF, None if exifread fails on the bytes."""
    try:
        tags = exifread.process_file(io.BytesIO(data), details=False)
        return json.dumps({k: str(v).strip() for k, v in tags.items() if v is not None})
    except Exception:  # noqa: BLE001 - exifread raises any type on odd files
        # Kept, not counted: the row's null `exif` records it, as img2dataset's does.
        return None


def decode_image(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode `data`; raise `ImageRejected` for bombs, truncation and undecodable bytes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRejected(
                    RejectReason.DECOMPRESSION_BOMB,
                    f"{width}x{height} = {width * height} pixels > {max_pixels}",
                    value=width * height,
                    limit=max_pixels,
                )
            source_format = image.format or "unknown"
            rotated = _has_rotation(image)
            passes_through = (
                not rotated
                and source_format in _PASS_THROUGH_FORMATS
                and image.mode in _PASS_THROUGH_MODES
            )
            if passes_through and source_format == "JPEG":
                # The resizer decodes these bytes again at full size; here we only need to
                # validate every block and get a small preview for hashing, which JPEG's
                # scaled DCT gives at a fraction of the cost (all the data is still read).
                image.draft(image.mode, (PREVIEW_SIDE, PREVIEW_SIDE))
            image.load()
    except ImageRejected:
        raise
    except Image.DecompressionBombError as error:
        raise ImageRejected(RejectReason.DECOMPRESSION_BOMB, str(error)) from error
    except Image.UnidentifiedImageError as error:
        # Pillow's message names the stream object and its memory address, which differs
        # on every run; say what the bytes are instead.
        raise ImageRejected(
            RejectReason.UNDECODABLE_IMAGE,
            f"not an image format Pillow reads ({len(data)} bytes, starting {data[:8]!r})",
        ) from error
    except OSError as error:
        reason = (
            RejectReason.TRUNCATED_IMAGE
            if "truncated" in str(error) or "broken data stream" in str(error)
            else RejectReason.UNDECODABLE_IMAGE
        )
        raise ImageRejected(reason, str(error)) from error
    except (ValueError, SyntaxError) as error:
        raise ImageRejected(RejectReason.UNDECODABLE_IMAGE, str(error)) from error

    exif = read_exif(data)
    if passes_through:
        return DecodedImage(image, data, source_format, width, height, exif)
    upright = ImageOps.exif_transpose(image) if rotated else image
    normalised = _to_8bit(upright)
    buffer = io.BytesIO()
    normalised.save(buffer, format="PNG", compress_level=1)
    return DecodedImage(normalised, buffer.getvalue(), source_format, *normalised.size, exif)


def _has_rotation(image: Image.Image) -> bool:
    orientation = image.getexif().get(0x0112, 1)
    return orientation not in (None, 1)


def _to_8bit(image: Image.Image) -> Image.Image:
    """RGB or RGBA with 8 bits per channel (L and RGB pass through unchanged)."""
    mode = image.mode
    if mode in _PASS_THROUGH_MODES:
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() if array.size else 0.0
        scale = 255.0 / (65535.0 if peak > 255 else max(peak, 1.0))
        return Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), mode="L")
    if mode == "F":
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        spread = high - low or 1.0
        return Image.fromarray(((array - low) / spread * 255).astype(np.uint8), mode="L")
    has_alpha = mode in ("LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    return image.convert("RGBA" if has_alpha else "RGB")
