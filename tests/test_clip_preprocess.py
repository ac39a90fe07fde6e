"""`BatchPreprocess` gives exactly the tensor of an open_clip transform applied image by image."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from lait.models.clip import load_clip, preprocess_encoded, preprocess_images
from lait.models.preprocess import BatchPreprocess


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    out = []
    for mode, (width, height) in [
        ("RGB", (384, 564)),
        ("RGB", (300, 200)),
        ("L", (256, 256)),
        ("RGBA", (90, 140)),
        ("P", (512, 384)),
    ]:
        array = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(array)
        out.append(image.convert(mode) if mode != "RGB" else image)
    return out


def _one_by_one(preprocess: object, images: list[Image.Image]) -> torch.Tensor:
    return torch.stack([preprocess(image.convert("RGB")) for image in images])  # type: ignore[operator]


TRANSFORMS = {
    "demo": lambda: load_clip().preprocess,
    "open_clip-224-crop": lambda: open_clip.image_transform(224, is_train=False),
    "open_clip-squash": lambda: open_clip.image_transform(
        96, is_train=False, resize_mode="squash", interpolation="bilinear"
    ),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@pytest.mark.parametrize("threads", [0, 2])
def test_batch_equals_the_transform_image_by_image(name: str, threads: int) -> None:
    preprocess = TRANSFORMS[name]()
    images = _images()
    pool = ThreadPoolExecutor(threads) if threads else None
    batch = BatchPreprocess(preprocess)(images, pool)
    expected = _one_by_one(preprocess, images)
    assert batch.shape == expected.shape
    assert batch.dtype == expected.dtype
    assert torch.equal(batch, expected)


def test_encoded_bytes_decode_to_the_same_batch() -> None:
    clip = load_clip()
    images = _images()
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG" if image.mode != "RGB" else "JPEG", quality=90)
        encoded.append(buffer.getvalue())
    decoded = [Image.open(io.BytesIO(data)) for data in encoded]
    with ThreadPoolExecutor(2) as pool:
        from_bytes = preprocess_encoded(clip, encoded, pool)
    assert torch.equal(from_bytes, _one_by_one(clip.preprocess, decoded))
    assert torch.equal(preprocess_images(clip, decoded), from_bytes)


def test_a_transform_of_another_shape_is_applied_as_it_is() -> None:
    def preprocess(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image.resize((8, 8)), dtype=np.float32)).mean(-1)

    images = _images()
    batch = BatchPreprocess(preprocess)(images)
    assert torch.equal(batch, _one_by_one(preprocess, images))
    assert batch.shape == (len(images), 8, 8)
