"""Resize and re-encode an image exactly as img2dataset's `Resizer` does, at less cost.

img2dataset (1.47) builds an albumentations transform for every image it resizes: pydantic
validation and signature inspection that cost about as much Python time, GIL held, as the
resize itself. `ImageResizer` does the same OpenCV work with the same size arithmetic
(albumentations' `SmallestMaxSize` / `LongestMaxSize` rounding, `CenterCrop`'s and
`PadIfNeeded`'s offsets, white alpha matting and white borders), so its output bytes equal
the `Resizer`'s for every resize mode; `tests/test_image_resize.py` checks that against
img2dataset itself.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from lait.image_decode import ImageRejected
from lait.record import RejectReason
from pipeline.image.config import ImageConfig

__all__ = ["ImageResizer", "ResizedImage"]

_QUALITY_FLAG = {
    "jpg": cv2.IMWRITE_JPEG_QUALITY,
    "png": cv2.IMWRITE_PNG_COMPRESSION,
    "webp": cv2.IMWRITE_WEBP_QUALITY,
}
_WHITE = (255, 255, 255)


@dataclasses.dataclass(frozen=True)
class ResizedImage:
    encoded: bytes
    width: int
    height: int


class ImageResizer:
    """Decodes bytes with OpenCV, resizes them by `config.resize_mode` and encodes them."""

    def __init__(self, config: ImageConfig) -> None:
        self.size = config.image_size
        self.mode = config.resize_mode
        self.only_if_bigger = config.resize_only_if_bigger
        self.extension = f".{config.encode_format}"
        self.encode_params = [int(_QUALITY_FLAG[config.encode_format]), config.encode_quality]

    def __call__(self, data: bytes) -> ResizedImage:
        return self.encode(self.resize(self.decode(data)))

    def decode(self, data: bytes) -> np.ndarray:
        """BGR or grey pixels of `data`, transparency composited over white."""
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if pixels is None:
            raise ImageRejected(RejectReason.UNDECODABLE_IMAGE, "OpenCV cannot decode the image")
        if pixels.ndim == 3 and pixels.shape[2] == 4:
            pixels = _matte_on_white(pixels)
        return np.asarray(pixels)

    def resize(self, pixels: np.ndarray) -> np.ndarray:
        """`pixels` (BGR or grey) resized and cropped or padded by the configured mode."""
        if self.mode == "no":
            return pixels
        height, width = pixels.shape[:2]
        fit_shorter = self.mode in ("keep_ratio", "center_crop")
        side = min(height, width) if fit_shorter else max(height, width)
        downscale = side > self.size
        if self.only_if_bigger and not downscale:
            return pixels
        scale = self.size / side
        new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
        if (new_height, new_width) != (height, width):
            interpolation = cv2.INTER_AREA if downscale else cv2.INTER_LANCZOS4
            pixels = cv2.resize(pixels, (new_width, new_height), interpolation=interpolation)
        if self.mode == "center_crop":
            top, left = (new_height - self.size) // 2, (new_width - self.size) // 2
            pixels = pixels[top : top + self.size, left : left + self.size]
        elif self.mode == "border":
            pad_height, pad_width = self.size - new_height, self.size - new_width
            top, left = max(0, pad_height) // 2, max(0, pad_width) // 2
            pixels = cv2.copyMakeBorder(
                pixels,
                top,
                max(0, pad_height) - top,
                left,
                max(0, pad_width) - left,
                cv2.BORDER_CONSTANT,
                value=_WHITE,
            )
        return pixels

    def encode(self, pixels: np.ndarray) -> ResizedImage:
        ok, buffer = cv2.imencode(self.extension, pixels, self.encode_params)
        if not ok:
            raise ImageRejected(RejectReason.UNDECODABLE_IMAGE, f"cannot encode {self.extension}")
        height, width = pixels.shape[:2]
        return ResizedImage(buffer.tobytes(), width, height)


def _matte_on_white(bgra: np.ndarray) -> np.ndarray:
    """BGRA composited over white, rounded as img2dataset does."""
    alpha = bgra[:, :, 3, np.newaxis]
    composed = alpha / 255 * bgra[..., :3] + 255 - alpha
    return np.asarray(np.rint(composed.clip(min=0, max=255)), dtype=np.uint8)
