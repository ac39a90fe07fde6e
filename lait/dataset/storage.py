"""Where dataset files live (a local folder or any fsspec URL) and how they are committed.

A file is committed atomically: readers see either nothing or the whole file. Locally it is
written under a hidden temporary name beside its target and renamed into place; on object
stores (gs://, s3://) it is written to a local temporary file and uploaded whole, since an
object only becomes visible when its upload completes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem

TEMP_PREFIX = "."
TEMP_SUFFIX = ".partial"


def filesystem(path: str | os.PathLike[str]) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem that holds `path`, and the path as that filesystem names it."""
    fs, root = fsspec.core.url_to_fs(os.fspath(path))
    return fs, root


def join(base: str, *parts: str) -> str:
    """Join path parts with '/', which every fsspec filesystem (and POSIX) accepts."""
    return "/".join([base.rstrip("/"), *parts])


def is_temporary(name: str) -> bool:
    """Whether a file name is an uncommitted write (to be ignored by readers)."""
    base = name.rsplit("/", 1)[-1]
    return base.startswith(TEMP_PREFIX) and base.endswith(TEMP_SUFFIX)


@contextlib.contextmanager
def atomic_output(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[IO[bytes]]:
    """Open `path` for writing so that it appears only complete, or not at all.

    If the body raises (or the process dies), the target is left as it was.
    """
    directory, name = path.rsplit("/", 1) if "/" in path else (".", path)
    local = isinstance(fs, LocalFileSystem)
    if local:
        os.makedirs(directory, exist_ok=True)
    fd, temp_path = tempfile.mkstemp(
        prefix=f"{TEMP_PREFIX}{name}.", suffix=TEMP_SUFFIX, dir=directory if local else None
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if local:
                os.fsync(handle.fileno())
        if local:
            os.replace(temp_path, path)
        else:
            fs.put_file(temp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)


def remove_stale_temporaries(fs: fsspec.AbstractFileSystem, folder: str) -> int:
    """Delete uncommitted writes left in `folder` by a killed writer; return how many."""
    if not fs.exists(folder):
        return 0
    removed = 0
    for entry in fs.ls(folder, detail=False):
        if is_temporary(entry):
            fs.rm(entry)
            removed += 1
    return removed
