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
import numpy as np

from lait.image_decode import ImageRejected, decode_image
from lait.record import Record, RejectReason
from pipeline.image.config import ImageConfig
from pipeline.image.faces import Box, FaceBlurrer
from pipeline.image.resize import ImageResizer

__all__ = ["ImageProcessor", "ImageRejected"]

# Keep OpenCV's warnings about odd files out of the job's log (the image is rejected with a
# reason instead). img2dataset dup2s stdout and stderr to /dev/null around each call for
# this, which is not thread-safe; OpenCV's own log level is.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


class ImageProcessor:
    """Turns a record carrying downloaded bytes into an accepted-ready or rejected record."""

    def __init__(self, config: ImageConfig) -> None:
        self.config = config
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
        resized = self._resizer(decoded.encoded)
        encoded, out_width, out_height = resized.encoded, resized.width, resized.height
        face_boxes = None
        if self._faces is not None:
            encoded, face_boxes = self._blur_faces(encoded, self._faces)
        return dataclasses.replace(
            record,
            image=encoded,
            image_format=config.encode_format,
            width=out_width,
            height=out_height,
            original_width=width,
            original_height=height,
            num_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            phash=str(imagehash.phash(decoded.preview)),
            exif=decoded.exif,
            face_boxes=face_boxes,
        )

    def _blur_faces(self, encoded: bytes, faces: FaceBlurrer) -> tuple[bytes, tuple[Box, ...]]:
        """The stored bytes with faces blurred (unchanged when none is found), and the boxes."""
        pixels = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
        if pixels is None:
            raise ImageRejected(RejectReason.UNDECODABLE_IMAGE, "resized image does not decode")
        boxes = faces.detect(pixels)
        if not boxes:
            return encoded, ()
        blurred = faces.blur(pixels, boxes)
        return self._resizer.encode(blurred).encoded, tuple(boxes)
