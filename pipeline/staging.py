"""Image bytes staged beside the output while selection runs on metadata only.

A fetched and resized image is written once, right after its download, into a staging file
under `OUT/_staging/` (one file per fetch batch: a few MB, not one object per image), and
the record carries a reference to it (`Record.image_ref`). Every later stage — best caption,
dedupe, the decisions join, the shard assignment — shuffles metadata only; CLIP scoring and
the shard writer read the bytes back from the file by range. So pixels cross no shuffle at
all, where carrying them in the records would move them through three (at 100M samples of
~40 KB, ~12 TB of shuffle).

A staging file is named by the hash of its contents, so a retried bundle writes the same
file again rather than a second one, and is committed atomically like every dataset file
(readers never see a partial one). The folder is removed when the job has written its
dataset (`remove_staging`).

A reference reads `PATH#OFFSET+LENGTH`.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

from lait.dataset.layout import STAGING_DIR
from lait.dataset.storage import atomic_output, filesystem, join


class StagingRefError(ValueError):
    """A staging reference that does not parse (not `PATH#OFFSET+LENGTH`)."""


def staging_folder(output_folder: str) -> str:
    """Where a job writing `output_folder` stages its images."""
    return join(output_folder, STAGING_DIR)


def stage_images(folder: str, images: Sequence[bytes]) -> list[str]:
    """Write `images` into one staging file under `folder`; their references, in order."""
    if not images:
        return []
    digest = hashlib.sha256()
    offsets = []
    offset = 0
    for image in images:
        digest.update(len(image).to_bytes(8, "big"))
        digest.update(image)
        offsets.append(offset)
        offset += len(image)
    fs, root = filesystem(folder)
    name = f"{digest.hexdigest()[:32]}.bin"
    path = join(root, name)
    fs.makedirs(root, exist_ok=True)
    with atomic_output(fs, path) as out:
        for image in images:
            out.write(image)
    base = join(folder, name)
    return [f"{base}#{start}+{len(image)}" for start, image in zip(offsets, images, strict=True)]


def parse_ref(ref: str) -> tuple[str, int, int]:
    """(path, offset, length) of a staging reference."""
    path, sep, span = ref.rpartition("#")
    start, plus, length = span.partition("+")
    if not sep or not plus or not start.isdigit() or not length.isdigit():
        raise StagingRefError(f"not a staging reference (PATH#OFFSET+LENGTH): {ref!r}")
    return path, int(start), int(length)


def read_staged(ref: str) -> bytes:
    """The image bytes a staging reference points at."""
    path, start, length = parse_ref(ref)
    fs, root = filesystem(path)
    data: bytes = fs.cat_file(root, start=start, end=start + length)
    if len(data) != length:
        raise StagingRefError(f"{ref}: staging file holds {len(data)} of {length} bytes")
    return data


def read_staged_many(refs: Sequence[str]) -> list[bytes]:
    """The bytes of many references, each staging file opened once (the writer's case: a
    shard's images come from many files, several from each)."""
    by_file: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for index, ref in enumerate(refs):
        path, start, length = parse_ref(ref)
        by_file[path].append((start, length, index))
    out: list[bytes] = [b""] * len(refs)
    for path, spans in by_file.items():
        fs, root = filesystem(path)
        with fs.open(root, "rb") as staged:
            for start, length, index in sorted(spans):
                staged.seek(start)
                data = staged.read(length)
                if len(data) != length:
                    raise StagingRefError(
                        f"{path}: staging file ends before {start}+{length} (a partial file?)"
                    )
                out[index] = data
    return out


def remove_staging(output_folder: str) -> None:
    """Delete the staging folder of a finished job (nothing if there is none)."""
    fs, root = filesystem(staging_folder(output_folder))
    if fs.exists(root):
        fs.rm(root, recursive=True)
