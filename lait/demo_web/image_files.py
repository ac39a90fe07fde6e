"""Image bytes for the demo web: encodings, and the damaged or altered copies noise needs."""

from __future__ import annotations

import base64
import io
import random

from PIL import Image

from lait.demo_web.scenes import Scene

CONTENT_TYPES: dict[str, str] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "ico": "image/x-icon",
}

EXTENSIONS: dict[str, str] = {
    "jpeg": "jpg",
    "png": "png",
    "webp": "webp",
    "gif": "gif",
    "ico": "ico",
}

NEAR_DUPLICATE_TRANSFORMS: tuple[str, ...] = ("requality", "resize", "crop")

# A transparent 1x1 GIF: the usual lazy-loading placeholder and tracking pixel.
TRANSPARENT_GIF: bytes = base64.b64decode(
    "R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
)
PLACEHOLDER_DATA_URI: str = "data:image/gif;base64," + base64.b64encode(TRANSPARENT_GIF).decode()


def encode_image(image: Image.Image, image_format: str, quality: int = 85) -> bytes:
    """Encode `image` as `image_format` (jpeg, png, webp, gif or ico), deterministically."""
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=quality)
    elif image_format == "png":
        # Level 1: these are textured images, so higher levels cost time and save little.
        image.save(buffer, format="PNG", compress_level=1)
    elif image_format == "webp":
        image.save(buffer, format="WEBP", quality=quality, method=1)
    elif image_format == "gif":
        image.save(buffer, format="GIF")
    elif image_format == "ico":
        image.save(buffer, format="ICO", sizes=[image.size])
    else:
        raise ValueError(f"cannot encode {image_format!r}; use one of {', '.join(CONTENT_TYPES)}")
    return buffer.getvalue()


def truncated(data: bytes) -> bytes:
    """The first half of `data`: a download cut off mid-stream."""
    return data[: len(data) // 2]


def random_bytes(rng: random.Random, low: int = 2_000, high: int = 20_000) -> bytes:
    """Bytes that are no image at all, of a plausible image's length."""
    return rng.randbytes(rng.randint(low, high))


def data_uri(data: bytes, content_type: str) -> str:
    """`data` inlined as a base64 data: URI."""
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def near_duplicate(
    original: bytes, scene: Scene, transform: str, rng: random.Random, min_side: int = 300
) -> tuple[bytes, Scene]:
    """A near-duplicate JPEG of `original` and the scene as it appears in it.

    `transform` is one of `NEAR_DUPLICATE_TRANSFORMS`: re-encoded at a lower JPEG quality,
    resized down by up to 20%, or cropped by a few percent per side. Sides stay at least
    `min_side` so the copy passes a size filter and only dedupe can catch it.
    """
    with Image.open(io.BytesIO(original)) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    if transform == "requality":
        return encode_image(image, "jpeg", quality=rng.randint(40, 60)), scene
    if transform == "resize":
        scale = max(rng.uniform(0.8, 0.92), min_side / min(width, height))
        size = (round(width * scale), round(height * scale))
        resized = image.resize(size, Image.Resampling.BILINEAR)
        return encode_image(resized, "jpeg", quality=85), scene.resized(*size)
    if transform == "crop":
        spare_x, spare_y = max(0, width - min_side), max(0, height - min_side)
        left = min(rng.randint(2, max(2, width // 30)), spare_x // 2)
        top = min(rng.randint(2, max(2, height // 30)), spare_y // 2)
        right = width - min(rng.randint(2, max(2, width // 30)), spare_x - left)
        bottom = height - min(rng.randint(2, max(2, height // 30)), spare_y - top)
        box = (left, top, right, bottom)
        return encode_image(image.crop(box), "jpeg", quality=85), scene.cropped(box)
    raise ValueError(f"unknown near-duplicate transform {transform!r}")
