"""Input paths as a job names them: one file, a glob, or a Common Crawl `*.paths.gz` manifest.

    expand_input("gs://bucket/crawl/*.warc.gz")         # every matching file, sorted
    expand_input("wat.paths.gz", prefix="s3://commoncrawl/")  # each listed path under prefix
    expand_input("/data/one.warc.gz")                   # itself

Paths go through fsspec (as `streams.open_source` does), so local files, gs:// and s3://
all match and read the same way, on whichever worker runs the expansion.
"""

from __future__ import annotations

from collections.abc import Iterator

import fsspec
from fsspec.core import split_protocol

from pipeline.sources.streams import SourceFormatError, open_source

# Where Common Crawl's manifests are relative to (`crawl-data/CC-MAIN-.../x.warc.gz`); its
# S3 bucket `s3://commoncrawl/` holds the same paths for jobs with AWS credentials.
COMMON_CRAWL_PREFIX = "https://data.commoncrawl.org/"
_MANIFEST_SUFFIXES = (".paths.gz", ".paths")
_GLOB_CHARS = frozenset("*?[")


class NoMatchingFiles(SourceFormatError):
    """A glob named by the job matches no file."""


def is_manifest(path: str) -> bool:
    """True for a Common Crawl path manifest (`warc.paths.gz`, `wat.paths.gz`, `*.paths`)."""
    return path.lower().endswith(_MANIFEST_SUFFIXES)


def is_glob(path: str) -> bool:
    """True when `path` holds a wildcard (`*`, `?` or `[...]`)."""
    return any(char in _GLOB_CHARS for char in path)


def glob_files(pattern: str) -> list[str]:
    """The files matching `pattern`, sorted, spelled with the pattern's protocol (gs://...)."""
    fs, _ = fsspec.core.url_to_fs(pattern)
    protocol, _ = split_protocol(pattern)
    matches = fs.glob(pattern, detail=True)  # one listing, no per-file lookups
    found = [p for p, info in matches.items() if info.get("type") != "directory"]
    if protocol is not None:
        found = [fs.unstrip_protocol(p) for p in found]
    if not found:
        raise NoMatchingFiles(
            f"{pattern!r} matches no file; check the folder and the pattern "
            "(e.g. gs://bucket/crawl/*.warc.gz)"
        )
    return sorted(found)


def manifest_paths(manifest: str, prefix: str = COMMON_CRAWL_PREFIX) -> Iterator[str]:
    """The paths a manifest lists, one per line: a relative line is joined to `prefix`, an
    absolute one (`/data/x.warc.gz`, `s3://b/x.warc.gz`) is taken as it is; blank lines and
    `#` comments are skipped."""
    with open_source(manifest) as stream:
        for raw in stream:
            line = (raw.decode("utf-8") if isinstance(raw, bytes) else raw).strip()
            if not line or line.startswith("#"):
                continue
            if "://" in line or line.startswith("/"):
                yield line
            else:
                yield prefix.rstrip("/") + "/" + line.lstrip("/")


def expand_input(path: str, prefix: str = COMMON_CRAWL_PREFIX) -> Iterator[str]:
    """The files one configured input names: a manifest's paths, a glob's matches, or itself."""
    if is_manifest(path):
        yield from manifest_paths(path, prefix)
    elif is_glob(path):
        yield from glob_files(path)
    else:
        yield path
