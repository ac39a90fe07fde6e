"""From fetched bytes to a shard-ready image: decode, filter (LAIT's rules), resize.

Resizing and encoding give the bytes img2dataset's `Resizer` gives for the same options
(`pipeline.image.resize`, checked against img2dataset in the tests). With `blur_faces`,
faces are then found in the resized image and blurred before the bytes are stored
(`pipeline.image.faces`).
"""

from __future__ import annotations

import dataclasses
import hashlib

import cv2
import imagehash

from dedupe.fingerprint import colour_thumbnail_of_pixels
from lait.image_decode import ImageRejected, decode_image
from lait.record import Record, RejectReason
from pipeline.image.config import ImageConfig
from pipeline.image.faces import FaceBlurrer
from pipeline.image.resize import ImageResizer

__all__ = ["ImageProcessor", "ImageRejected"]

# Keep OpenCV's warnings about odd files out of the job's log (the image is rejected with a
# reason instead). img2dataset dup2s stdout and stderr to /dev/null around each call for
# this, which is not thread-safe; OpenCV's own log level is.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


class ImageProcessor:
    """Turns a record carrying downloaded bytes into an accepted-ready or rejected record."""

    def __init__(self, config: ImageConfig, *, colour_thumbnails: bool = False) -> None:
        """With `colour_thumbnails`, a kept record also carries dedupe's colour thumbnails,
        taken from the stored pixels before they are encoded (no second decode)."""
        self.config = config
        self.colour_thumbnails = colour_thumbnails
        self._resizer = ImageResizer(config)
        self._faces = FaceBlurrer() if config.blur_faces else None

    def process(self, record: Record) -> Record:
        """Decode, filter and resize `record.image`; a failure becomes a reject reason."""
        if record.image is None:
            raise ValueError(f"record {record.key} has no downloaded bytes to process")
        try:
            return self._process(record, record.image)
        except ImageRejected as rejection:
            return record.rejected(
                rejection.reason, rejection.detail, value=rejection.value, limit=rejection.limit
            )

    def _process(self, record: Record, data: bytes) -> Record:
        config = self.config
        if len(data) < config.min_bytes:
            raise ImageRejected(
                RejectReason.TOO_FEW_BYTES,
                f"{len(data)} bytes < {config.min_bytes}",
                value=len(data),
                limit=config.min_bytes,
            )
        decoded = decode_image(data, config.max_pixels)
        width, height = decoded.width, decoded.height
        if min(width, height) < config.min_side:
            raise ImageRejected(
                RejectReason.TOO_SMALL,
                f"{width}x{height}: shorter side < {config.min_side}",
                value=min(width, height),
                limit=config.min_side,
            )
        aspect = max(width, height) / min(width, height)
        if aspect > config.max_aspect_ratio:
            raise ImageRejected(
                RejectReason.BAD_ASPECT_RATIO,
                f"{width}x{height}: {aspect:.2f} > {config.max_aspect_ratio}",
                value=aspect,
                limit=config.max_aspect_ratio,
            )
        pixels = self._resizer.resize(self._resizer.decode(decoded.encoded))
        resized = self._resizer.encode(pixels)
        face_boxes = None
        if self._faces is not None:
            # Faces are looked for in the stored image, as a user of the dataset would see it.
            stored = self._resizer.decode(resized.encoded)
            face_boxes = tuple(self._faces.detect(stored))
            if face_boxes:
                pixels = self._faces.blur(stored, list(face_boxes))
                resized = self._resizer.encode(pixels)
        thumbnail = colour_thumbnail_of_pixels(pixels, bgr=True) if self.colour_thumbnails else None
        return dataclasses.replace(
            record,
            image=resized.encoded,
            image_format=config.encode_format,
            width=resized.width,
            height=resized.height,
            original_width=width,
            original_height=height,
            num_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            phash=str(imagehash.phash(decoded.preview)),
            exif=decoded.exif,
            face_boxes=face_boxes,
            colour_thumbnail=thumbnail,
        )
