"""Face blurring in the image processor: a real portrait's face is blurred in the stored JPEG
and its box recorded; demo-web shapes get no boxes; off by default."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import cv2
import matplotlib.cbook
import numpy as np
import pytest

from lait.dataset.schema import metadata_table
from lait.demo_web import build_site
from lait.record import CaptionSource, Record, Status
from pipeline.image import ImageConfig, ImageProcessor


@pytest.fixture(scope="module")
def portrait() -> bytes:
    """Grace Hopper's portrait, a real photograph that matplotlib ships (512 x 600 JPEG)."""
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return Path(str(path)).read_bytes()


def _record(data: bytes) -> Record:
    record = Record.candidate(
        source="t", url="http://h/p.jpg", caption="a portrait", caption_source=CaptionSource.ALT
    )
    return dataclasses.replace(record, image=data)


def _high_frequency_energy(data: bytes, box: tuple[int, int, int, int]) -> float:
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    x1, y1, x2, y2 = box
    return float(cv2.Laplacian(grey[y1:y2, x1:x2].astype(np.float64), cv2.CV_64F).var())


def test_the_portraits_face_is_blurred_in_the_stored_jpeg_and_its_box_recorded(
    portrait: bytes,
) -> None:
    plain = ImageProcessor(ImageConfig()).process(_record(portrait))
    blurred = ImageProcessor(ImageConfig(blur_faces=True)).process(_record(portrait))
    assert plain.status is blurred.status is Status.CANDIDATE
    assert plain.face_boxes is None  # not looked for
    boxes = blurred.face_boxes
    assert boxes is not None
    assert len(boxes) == 1, blurred.face_boxes
    (box,) = boxes
    x1, y1, x2, y2 = box
    assert blurred.width is not None and blurred.height is not None
    assert 0 <= x1 < x2 <= blurred.width and 0 <= y1 < y2 <= blurred.height
    # The face is in the upper middle of the portrait and a sizeable part of it.
    assert x1 < blurred.width / 2 < x2 and y2 < blurred.height * 0.75
    assert (x2 - x1) * (y2 - y1) > 0.1 * blurred.width * blurred.height
    assert blurred.image is not None and plain.image is not None
    assert blurred.image[:2] == b"\xff\xd8"  # still a JPEG
    before = _high_frequency_energy(plain.image, box)
    after = _high_frequency_energy(blurred.image, box)
    assert after < 0.05 * before, (before, after)
    # Outside the face nothing changes beyond JPEG noise: the bottom strip of the photo.
    strip = (0, blurred.height - 60, blurred.width, blurred.height)
    ratio = _high_frequency_energy(blurred.image, strip) / _high_frequency_energy(
        plain.image, strip
    )
    assert 0.8 < ratio < 1.25, ratio
    # Hashes describe the downloaded original, not the blurred copy, so dedupe is unchanged.
    assert blurred.sha256 == plain.sha256 and blurred.phash == plain.phash
    table = metadata_table([blurred])
    assert table.column("face_boxes")[0].as_py() == [list(box)]


def test_demo_web_images_get_no_face_boxes() -> None:
    site = build_site(seed=11, n_images=40)
    processor = ImageProcessor(ImageConfig(blur_faces=True))
    checked = 0
    for ref in site.ground_truth.references:
        resource = site.lookup(ref.final_url or ref.url)
        if ref.image_format is None or resource is None or resource.status != 200:
            continue
        out = processor.process(_record(resource.body))
        if out.status is Status.CANDIDATE:
            assert out.face_boxes == (), (ref.url, out.face_boxes)
            checked += 1
    assert checked >= 25


def test_an_image_without_faces_keeps_its_bytes(portrait: bytes) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (400, 400), (200, 30, 30)).save(buffer, format="JPEG", quality=90)
    plain = ImageProcessor(ImageConfig()).process(_record(buffer.getvalue()))
    looked = ImageProcessor(ImageConfig(blur_faces=True)).process(_record(buffer.getvalue()))
    assert looked.face_boxes == () and looked.image == plain.image
