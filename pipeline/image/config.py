"""Decoding limits, image filters and resizing options for fetched images."""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """Decoding limits, image filters (LAIT's defaults) and img2dataset's resizer options."""

    image_size: int = 384
    resize_mode: Literal["no", "keep_ratio", "center_crop", "border", "keep_ratio_largest"] = (
        "keep_ratio"
    )
    resize_only_if_bigger: bool = True
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    encode_quality: int = 95
    min_side: int = 300
    max_aspect_ratio: float = 3.0
    # A floor for obviously broken bodies only: a valid flat PNG of 400x400 is ~160 bytes,
    # so "too small" is judged by the decoded size (`min_side`), not by the bytes.
    min_bytes: int = 64
    max_pixels: int = 89_478_485  # Pillow's decompression-bomb limit
    # Blur faces in the stored image (OpenCV's Haar cascade), recording their boxes in
    # `face_boxes`, as DataComp releases its pool.
    blur_faces: bool = False
