"""Small JPEG thumbnails of chosen samples, read from only the shards that hold them.

A shard is opened for random access, so tar headers are read and member data is skipped
(seeked over) until every wanted key of that shard is found: a gallery of 24 images reads
at most 24 shards' headers and 24 images, whatever the size of the dataset.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import tarfile
from collections.abc import Iterable, Mapping

from PIL import Image

from lait.dataset import layout, storage

THUMBNAIL_SIDE = 320
_IMAGE_EXTENSIONS = ("jpg", "png", "webp")


@dataclasses.dataclass
class Thumbnails:
    """Data URIs by sample key, and the keys whose image could not be shown (and why)."""

    uris: dict[str, str] = dataclasses.field(default_factory=dict)
    failures: dict[str, str] = dataclasses.field(default_factory=dict)


def thumbnail_uri(image: bytes, side: int = THUMBNAIL_SIDE) -> str:
    """A `data:image/jpeg` URI of `image` scaled to fit `side` x `side` pixels.

    Raises what Pillow raises on bytes it cannot decode (OSError, ValueError,
    Image.DecompressionBombError).
    """
    with Image.open(io.BytesIO(image)) as picture:
        picture.draft("RGB", (side, side))  # JPEG: decode at a reduced scale, much faster
        picture.thumbnail((side, side))
        rgb = picture.convert("RGB")
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=80, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def read_thumbnails(dataset: str, wanted: Mapping[int, Iterable[str]]) -> Thumbnails:
    """Thumbnails of the samples `wanted` ({shard id: keys}) of the dataset folder `dataset`."""
    fs, root = storage.filesystem(dataset)
    result = Thumbnails()
    for shard_id, keys in sorted(wanted.items()):
        missing = set(keys)
        path = storage.join(root, layout.shard_tar_name(shard_id))
        try:
            with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
                for member in tar:
                    key, _, extension = member.name.partition(".")
                    if key not in missing or extension not in _IMAGE_EXTENSIONS:
                        continue
                    missing.discard(key)
                    extracted = tar.extractfile(member)
                    if extracted is None:
                        result.failures[key] = "not a regular file in the shard"
                        continue
                    try:
                        result.uris[key] = thumbnail_uri(extracted.read())
                    except (OSError, ValueError, Image.DecompressionBombError) as error:
                        result.failures[key] = f"undecodable image: {error}"
                    if not missing:
                        break
        except FileNotFoundError:
            for key in missing:
                result.failures[key] = f"no image: {layout.shard_tar_name(shard_id)} is not here"
            continue
        except (OSError, tarfile.TarError) as error:
            for key in missing:
                result.failures[key] = f"shard {layout.shard_tar_name(shard_id)}: {error}"
            continue
        for key in missing:
            result.failures[key] = f"not found in {layout.shard_tar_name(shard_id)}"
    return result
