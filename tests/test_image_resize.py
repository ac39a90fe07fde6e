"""`ImageResizer` gives img2dataset's `Resizer` bytes, byte for byte, in every resize mode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from img2dataset.resizer import Resizer
from PIL import Image

from lait.image_decode import ImageRejected
from pipeline.config import ImageConfig
from pipeline.image.resize import ImageResizer

MODES = ["no", "keep_ratio", "center_crop", "border", "keep_ratio_largest"]


def _image(width: int, height: int, mode: str, fmt: str) -> bytes:
    rng = np.random.default_rng(width * 1000 + height)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    array = rng.integers(0, 255, (height, width, channels), dtype=np.uint8)
    if mode == "RGBA":
        array[: height // 2, :, 3] = 0  # half transparent: matting must show white there
        array[height // 2 :, : width // 3, 3] = 128
    image = Image.fromarray(array[..., 0] if channels == 1 else array, mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


# Odd sizes exercise the rounding of the scaled side, crop and pad offsets; the small ones
# are upscaled (Lanczos), the large ones downscaled (area).
INPUTS = [
    (647, 468, "RGB", "JPEG"),
    (333, 101, "RGB", "PNG"),
    (45, 97, "L", "PNG"),
    (129, 129, "RGB", "JPEG"),
    (800, 257, "RGBA", "PNG"),
    (64, 40, "RGBA", "PNG"),
    (1001, 999, "L", "JPEG"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("only_if_bigger", [False, True])
@pytest.mark.parametrize("fmt, quality", [("jpg", 95), ("png", 3), ("webp", 80)])
def test_output_equals_img2dataset_resizer(
    mode: str, only_if_bigger: bool, fmt: str, quality: int
) -> None:
    config = ImageConfig(
        image_size=128,
        resize_mode=mode,  # type: ignore[arg-type]
        resize_only_if_bigger=only_if_bigger,
        encode_format=fmt,  # type: ignore[arg-type]
        encode_quality=quality,
    )
    ours = ImageResizer(config)
    peer = Resizer(
        image_size=128,
        resize_mode=mode,
        resize_only_if_bigger=only_if_bigger,
        encode_format=fmt,
        encode_quality=quality,
    )
    for width, height, image_mode, source_format in INPUTS:
        data = _image(width, height, image_mode, source_format)
        expected, exp_width, exp_height, _, _, error = peer(io.BytesIO(data))
        assert error is None
        got = ours(data)
        where = f"{width}x{height} {image_mode} {source_format}"
        assert (got.width, got.height) == (exp_width, exp_height), where
        assert got.encoded == expected, where


def test_sizes_follow_the_mode() -> None:
    data = _image(300, 200, "RGB", "PNG")
    sizes = {}
    for mode in MODES:
        resized = ImageResizer(ImageConfig(image_size=100, resize_mode=mode))(data)  # type: ignore[arg-type]
        assert Image.open(io.BytesIO(resized.encoded)).size == (resized.width, resized.height)
        sizes[mode] = (resized.width, resized.height)
    assert sizes == {
        "no": (300, 200),
        "keep_ratio": (150, 100),
        "center_crop": (100, 100),
        "border": (100, 100),
        "keep_ratio_largest": (100, 67),
    }


def test_transparent_pixels_become_white() -> None:
    pixels = np.zeros((50, 50, 4), dtype=np.uint8)  # fully transparent black
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, format="PNG")
    config = ImageConfig(image_size=50, resize_mode="no", encode_format="png", encode_quality=1)
    resized = ImageResizer(config)(buffer.getvalue())
    out = np.asarray(Image.open(io.BytesIO(resized.encoded)))
    assert out.shape == (50, 50, 3) and int(out.min()) == 255


def test_undecodable_bytes_are_a_reject_reason() -> None:
    with pytest.raises(ImageRejected, match="OpenCV cannot decode"):
        ImageResizer(ImageConfig())(b"not an image at all")
