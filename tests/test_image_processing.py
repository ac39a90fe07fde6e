from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from lait.record import CaptionSource, Record, RejectReason, Status
from pipeline.config import ImageConfig
from pipeline.image import ImageProcessor


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _noisy(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(array, "RGB").convert(mode)


def _with(data: bytes) -> Record:
    candidate = Record.candidate(
        source="t", url="http://127.0.0.1/i.jpg", caption="c", caption_source=CaptionSource.ALT
    )
    return dataclasses.replace(candidate, image=data)


@pytest.fixture(scope="module")
def processor() -> ImageProcessor:
    return ImageProcessor(ImageConfig(image_size=256))


def test_resizes_and_keeps_original_size(processor: ImageProcessor) -> None:
    out = processor.process(_with(_encode(_noisy((800, 600)), "JPEG")))
    assert out.status is Status.CANDIDATE and out.image_format == "jpg"
    assert (out.original_width, out.original_height) == (800, 600)
    assert min(out.width or 0, out.height or 0) == 256
    assert Image.open(io.BytesIO(out.image or b"")).size == (out.width, out.height)
    assert out.sha256 and len(out.phash or "") == 16


@pytest.mark.parametrize(
    "image, fmt",
    [
        (_noisy((400, 320), "CMYK"), "JPEG"),
        (_noisy((400, 320), "P"), "PNG"),
        (_noisy((400, 320), "LA"), "PNG"),
        (
            Image.fromarray((np.arange(400 * 320).reshape(320, 400) % 65535).astype(np.uint16)),
            "PNG",
        ),
        (_noisy((400, 320)), "WEBP"),
        (_noisy((400, 320)), "GIF"),
    ],
    ids=["cmyk", "palette", "grey-alpha", "16-bit", "webp", "gif"],
)
def test_unusual_modes_become_rgb(processor: ImageProcessor, image: Image.Image, fmt: str) -> None:
    out = processor.process(_with(_encode(image, fmt)))
    assert out.status is Status.CANDIDATE, out.reject_detail
    decoded = Image.open(io.BytesIO(out.image or b""))
    assert decoded.mode in ("RGB", "L") and (out.original_width, out.original_height) == (400, 320)


def test_exif_rotation_is_applied(processor: ImageProcessor) -> None:
    image = _noisy((600, 400))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    out = processor.process(_with(_encode(image, "JPEG", exif=exif.tobytes())))
    assert (out.original_width, out.original_height) == (400, 600)


@pytest.mark.parametrize(
    "data, reason",
    [
        (_encode(_noisy((640, 480)), "JPEG")[:4000], RejectReason.TRUNCATED_IMAGE),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20, RejectReason.UNDECODABLE_IMAGE),
        (b"<html>not an image</html>" * 100, RejectReason.UNDECODABLE_IMAGE),
        (_encode(_noisy((120, 120)), "JPEG"), RejectReason.TOO_SMALL),
        (_encode(_noisy((1500, 320)), "JPEG"), RejectReason.BAD_ASPECT_RATIO),
        (b"\xff\xd8\xff", RejectReason.TOO_FEW_BYTES),
    ],
    ids=["truncated", "garbage-png", "html", "small", "aspect", "tiny"],
)
def test_bad_images_get_reasons(
    processor: ImageProcessor, data: bytes, reason: RejectReason
) -> None:
    out = processor.process(_with(data))
    assert out.status is Status.REJECTED and out.reject_reason is reason
    assert out.image is None and out.reject_detail


@pytest.mark.parametrize(
    "data",
    [
        _encode(Image.new("P", (400, 400), 3), "PNG", optimize=True),
        _encode(Image.new("RGB", (420, 420), (200, 30, 40)), "WEBP", quality=50),
    ],
    ids=["flat-palette-png", "flat-webp"],
)
def test_valid_small_encodings_pass_the_default_filters(data: bytes) -> None:
    # Hundreds of bytes for 400-pixel images: tiny on the wire, not tiny images.
    assert len(data) < 1_000
    out = ImageProcessor(ImageConfig()).process(_with(data))
    assert out.status is Status.CANDIDATE, out.reject_detail
    assert min(out.original_width or 0, out.original_height or 0) >= 400


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # A 20000x20000 one-bit PNG is a few KB on the wire but 1.2 GB once decoded to RGB.
    processor = ImageProcessor(ImageConfig(max_pixels=50_000_000))
    bomb = _encode(Image.new("1", (20_000, 20_000)), "PNG")
    out = processor.process(_with(bomb))
    assert out.reject_reason is RejectReason.DECOMPRESSION_BOMB


def test_colour_thumbnails_come_from_the_stored_pixels() -> None:
    from dedupe.fingerprint import THUMBNAILS_BYTES, colour_thumbnail

    data = _encode(_noisy((640, 480)).resize((640, 480)), "JPEG", quality=90)
    plain = ImageProcessor(ImageConfig()).process(_with(data))
    out = ImageProcessor(ImageConfig(), colour_thumbnails=True).process(_with(data))
    assert plain.colour_thumbnail is None and out.image == plain.image
    assert out.colour_thumbnail is not None and len(out.colour_thumbnail) == THUMBNAILS_BYTES
    # Taken before encoding, so within JPEG's rounding of what decoding the stored bytes gives.
    from_bytes = np.frombuffer(colour_thumbnail(out.image or b"") or b"", np.uint8)
    taken = np.frombuffer(out.colour_thumbnail, np.uint8)
    assert int(np.abs(taken.astype(int) - from_bytes.astype(int)).max()) <= 2
