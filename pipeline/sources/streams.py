"""Open a source given as a path (local, gs://, anything fsspec reads) or as an open stream."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import IO, Any

import fsspec

# A path fsspec can open, or a stream already open (binary, or text for line readers).
SourceInput = str | os.PathLike[str] | IO[bytes] | IO[str]


class SourceFormatError(ValueError):
    """A source file as a whole cannot be read as configured (wrong columns, wrong format)."""


def source_name(src: SourceInput) -> str:
    """A name for the source, for reject details and malformed-row keys ("" if it has none)."""
    if isinstance(src, str | os.PathLike):
        return os.fspath(src)
    name = getattr(src, "name", "")
    return name if isinstance(name, str) else ""


@contextlib.contextmanager
def open_source(src: SourceInput, *, decompress: bool = True) -> Iterator[Any]:
    """The source as an open stream; a path is opened binary (gzip etc. inferred from the name
    when `decompress`), a stream is used as it is and not closed."""
    if isinstance(src, str | os.PathLike):
        compression = "infer" if decompress else None
        with fsspec.open(os.fspath(src), "rb", compression=compression) as stream:
            yield stream
    else:
        yield src
