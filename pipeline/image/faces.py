"""Face blurring before an image is stored, as DataComp releases its pool.

Faces are found with OpenCV's frontal-face Haar cascade, which ships inside
`opencv-python-headless` (img2dataset's dependency): offline, CPU-only, a few milliseconds
on a resized image. Each box (grown by a margin, so hairline and chin go too) is replaced by
a strong Gaussian blur of itself; the boxes are returned in the stored image's pixels.

A cascade is not thread-safe, and the download stage resizes from a thread pool, so each
thread gets its own (`threading.local`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from lait.record import FaceBox as Box  # (x1, y1, x2, y2), what `face_boxes` holds

CASCADE_FILE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class FaceDetectorConfig:
    """Haar cascade settings: image pyramid step, neighbours a detection needs, and the
    smallest face side in pixels (below it a face says nothing anyone could recognise)."""

    scale_factor: float = 1.1
    min_neighbors: int = 6
    min_face_side: int = 24
    margin: float = 0.15  # each side grown by this share of the box


class FaceDetectorError(RuntimeError):
    """OpenCV's face cascade could not be loaded (a broken opencv install)."""


class FaceBlurrer:
    """Finds faces in a decoded BGR image and blurs them in place."""

    def __init__(self, config: FaceDetectorConfig | None = None) -> None:
        self.config = config or FaceDetectorConfig()
        self._local = threading.local()

    def _cascade(self) -> cv2.CascadeClassifier:
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            path = cv2.data.haarcascades + CASCADE_FILE  # type: ignore[attr-defined]
            cascade = cv2.CascadeClassifier(path)
            if cascade.empty():
                raise FaceDetectorError(
                    f"cannot load OpenCV's face cascade from {path}; reinstall "
                    "opencv-python-headless, or turn face blurring off (image.blur_faces=false)"
                )
            self._local.cascade = cascade
        return cascade

    def detect(self, image: np.ndarray) -> list[Box]:
        """Face boxes (x1, y1, x2, y2, exclusive) in `image` (BGR, BGRA or grey), sorted."""
        if image.ndim == 2:
            grey = image
        else:
            code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
            grey = cv2.cvtColor(image, code)
        grey = cv2.equalizeHist(grey)
        side = self.config.min_face_side
        found = self._cascade().detectMultiScale(
            grey,
            scaleFactor=self.config.scale_factor,
            minNeighbors=self.config.min_neighbors,
            minSize=(side, side),
        )
        height, width = grey.shape[:2]
        boxes = []
        for x, y, w, h in found if len(found) else []:
            grow_x, grow_y = round(w * self.config.margin), round(h * self.config.margin)
            boxes.append(
                (
                    max(0, int(x) - grow_x),
                    max(0, int(y) - grow_y),
                    min(width, int(x + w) + grow_x),
                    min(height, int(y + h) + grow_y),
                )
            )
        return sorted(boxes)

    @staticmethod
    def blur(image: np.ndarray, boxes: list[Box]) -> np.ndarray:
        """`image` with each box replaced by a Gaussian blur strong enough that no facial
        feature survives (kernel about half the box's shorter side)."""
        out = image.copy()
        for x1, y1, x2, y2 in boxes:
            region = out[y1:y2, x1:x2]
            kernel = max(3, (min(x2 - x1, y2 - y1) // 2) | 1)
            out[y1:y2, x1:x2] = cv2.GaussianBlur(region, (kernel, kernel), 0)
        return out
