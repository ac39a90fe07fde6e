"""Beam transforms over the pure readers in `pipeline.sources` and `pipeline.extract`.

Inputs are spread over workers as file paths, never as file contents: each configured path,
glob (`gs://bucket/lists/*.tsv`) or Common Crawl manifest (`wat.paths.gz`) is expanded to its
files (`pipeline.sources.matching`, through fsspec), and the paths are reshuffled. Then:

- url+caption lists are read by a splittable DoFn: a line file (Conceptual Captions TSV, SBU
  TSV, JSON Lines) in byte ranges, a parquet file by row group, so one big list is read by
  many workers at once (and Dataflow can split a range further while it runs). A row belongs
  to the range its first byte is in, so every row is read exactly once, malformed ones as
  MALFORMED_ROW rejects, named by their byte offset ("list.tsv@1234"). Compressed line files
  cannot be cut into ranges and are read whole, as are CSV / TSV tables with a header (a
  quoted field may hold a line break, so a range cannot tell where its rows start) and SBU's
  two aligned files: split those into many files to spread them.
- WARC and WAT files are read whole, one file per worker (their pages and candidates stay on
  that worker; the graph spreads candidates by URL after).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

import apache_beam as beam
import fsspec
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.transforms.core import RestrictionProvider
from fsspec.utils import infer_compression

from lait.record import Record
from pipeline.config import ListSource
from pipeline.extract import extract_page
from pipeline.extract.page_policy import PagePolicy, apply_page_policy
from pipeline.outcomes import count_page
from pipeline.sources import (
    SourceFormatError,
    iter_warc_pages,
    iter_wat_candidates,
    open_source,
    read_conceptual_captions,
    read_sbu,
    read_sbu_tsv,
    read_url_caption_table,
)
from pipeline.sources.lists import jsonl_row, open_parquet, parquet_rows, tsv_pair_row
from pipeline.sources.matching import COMMON_CRAWL_PREFIX, expand_input, is_glob, is_manifest

# Byte ranges a line file is cut into before the run starts (Beam's text reader uses 64 MiB).
DEFAULT_SPLIT_BYTES = 64 * 1024 * 1024

ListFileKind = Literal["lines", "parquet", "whole"]


def read_list(source: ListSource) -> Iterator[Record]:
    """Every candidate (and malformed-row reject) of one url+caption list file, in one pass."""
    name = source.source_name
    if source.format == "cc":
        yield from read_conceptual_captions(source.path, source=name)
    elif source.format == "sbu" and source.captions_path:
        yield from read_sbu(source.path, source.captions_path, source=name)
    elif source.format == "sbu":
        yield from read_sbu_tsv(source.path, source=name)
    else:
        yield from read_url_caption_table(
            source.path,
            source=name,
            url_column=source.url_column,
            caption_column=source.caption_column,
            format=source.format,
        )


class ListFile(NamedTuple):
    """One file of a configured list: its path, the list's settings, the range size."""

    path: str
    source: ListSource
    split_bytes: int = DEFAULT_SPLIT_BYTES

    @property
    def kind(self) -> ListFileKind:
        """How the file can be cut: "lines" (byte ranges), "parquet" (row groups), "whole"."""
        fmt = self.source.format
        if fmt == "parquet":
            return "parquet"
        if fmt in ("cc", "jsonl") or (fmt == "sbu" and not self.source.captions_path):
            return "lines"
        return "whole"

    @property
    def compressed(self) -> bool:
        return infer_compression(self.path) is not None


def list_files(
    source: ListSource,
    prefix: str = COMMON_CRAWL_PREFIX,
    split_bytes: int = DEFAULT_SPLIT_BYTES,
) -> Iterator[ListFile]:
    """The files of one configured list (its path may be a glob or a manifest)."""
    if source.format == "sbu" and source.captions_path:
        if is_glob(source.path) or is_manifest(source.path):
            raise SourceFormatError(
                f"SBU's two aligned files are named one by one, not by a pattern: {source.path!r}"
            )
        yield ListFile(source.path, source, split_bytes)
        return
    for path in expand_input(source.path, prefix):
        yield ListFile(path, source, split_bytes)


class _ListFileRanges(RestrictionProvider):
    """The restriction of a list file: byte offsets (line files), row groups (parquet), or
    (0, 1), the whole file at once."""

    def initial_restriction(self, item: ListFile) -> OffsetRange:
        if item.kind == "parquet":
            with open_parquet(item.path) as parquet:
                return OffsetRange(0, parquet.num_row_groups)
        if item.kind == "lines" and not item.compressed:
            fs, path = fsspec.core.url_to_fs(item.path)
            return OffsetRange(0, int(fs.size(path)))
        return OffsetRange(0, 1)

    def split(self, item: ListFile, restriction: OffsetRange) -> Iterator[OffsetRange]:
        if item.kind == "parquet":
            yield from restriction.split(1)
        elif item.kind == "lines" and not item.compressed:
            yield from restriction.split(item.split_bytes, max(1, item.split_bytes // 4))
        else:
            yield restriction

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, item: ListFile, restriction: OffsetRange) -> int:
        size: int = restriction.size()
        return size


def _line_record(item: ListFile, line: bytes, offset: int) -> Record | None:
    source = item.source
    common: dict[str, Any] = {
        "source": source.source_name,
        "origin": item.path,
        "position": offset,
        "unit": "byte",
    }
    if source.format == "jsonl":
        return jsonl_row(
            line, url_column=source.url_column, caption_column=source.caption_column, **common
        )
    if source.format == "cc":
        return tsv_pair_row(line, url_field=1, caption_field=0, **common)
    return tsv_pair_row(line, url_field=0, caption_field=1, **common)


class _ReadListFile(beam.DoFn):
    """A list file's rows in its restriction: each line starting in the byte range, each row of
    the row groups, or (restriction (0, 1)) every row of the file."""

    def process(
        self,
        item: ListFile,
        tracker: Any = beam.DoFn.RestrictionParam(_ListFileRanges()),  # noqa: B008
    ) -> Iterator[Record]:
        restriction = tracker.current_restriction()
        if item.kind == "parquet":
            with open_parquet(item.path) as parquet:
                group = restriction.start
                while tracker.try_claim(group):
                    yield from _parquet_group(parquet, item, group)
                    group += 1
        elif item.kind == "lines" and not item.compressed:
            yield from self._line_range(item, tracker, restriction.start)
        elif tracker.try_claim(0):
            if item.kind == "lines":  # compressed: one pass, still named by (decompressed) offset
                offset = 0
                with open_source(item.path) as stream:
                    for line in stream:
                        record = _line_record(item, line, offset)
                        offset += len(line)
                        if record is not None:
                            yield record
            else:
                yield from read_list(dataclasses.replace(item.source, path=item.path))

    @staticmethod
    def _line_range(item: ListFile, tracker: Any, start: int) -> Iterator[Record]:
        with fsspec.open(item.path, "rb", compression=None) as stream:
            offset = 0
            if start > 0:
                # The line under `start` began in the range before (unless a line ends just
                # before it): skip to the first line that starts at or after `start`.
                stream.seek(start - 1)
                offset = start - 1 + len(stream.readline())
            while tracker.try_claim(offset):
                line = stream.readline()
                if not line:  # the file shrank since it was sized: nothing left to claim
                    tracker.try_claim(tracker.current_restriction().stop)
                    return
                record = _line_record(item, line, offset)
                offset += len(line)
                if record is not None:
                    yield record


def _parquet_group(parquet: Any, item: ListFile, group: int) -> Iterator[Record]:
    source = item.source
    return parquet_rows(
        parquet,
        source=source.source_name,
        origin=item.path,
        url_column=source.url_column,
        caption_column=source.caption_column,
        row_groups=range(group, group + 1),
    )


class ReadLists(beam.PTransform):
    """url+caption lists in the config → candidate records (and malformed-row rejects).

    `manifest_prefix`: where the relative lines of a `*.paths.gz` manifest live.
    `split_bytes`: the byte ranges line files are cut into.
    """

    def __init__(
        self,
        lists: tuple[ListSource, ...],
        manifest_prefix: str = COMMON_CRAWL_PREFIX,
        split_bytes: int = DEFAULT_SPLIT_BYTES,
    ) -> None:
        super().__init__()
        if split_bytes < 1:
            raise ValueError("ReadLists: split_bytes must be at least 1")
        self.lists = lists
        self.manifest_prefix = manifest_prefix
        self.split_bytes = split_bytes

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        return (
            pipeline
            | "Lists" >> beam.Create(list(self.lists))
            | "ListFiles"
            >> beam.FlatMap(list_files, prefix=self.manifest_prefix, split_bytes=self.split_bytes)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadRows" >> beam.ParDo(_ReadListFile())
        )


class MatchFiles(beam.PTransform):
    """Configured paths, globs and manifests → every file they name, spread over workers."""

    def __init__(self, paths: tuple[str, ...], manifest_prefix: str = COMMON_CRAWL_PREFIX) -> None:
        super().__init__()
        self.paths = paths
        self.manifest_prefix = manifest_prefix

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        return (
            pipeline
            | "Inputs" >> beam.Create(sorted(self.paths))
            | "Expand" >> beam.FlatMap(expand_input, prefix=self.manifest_prefix)
            | "SpreadFiles" >> beam.Reshuffle()
        )


def _warc_pages(path: str) -> Iterator[tuple[str, bytes, str | None, str]]:
    """(page URL, HTML, charset, where: the file and the page's place in it)."""
    with open_source(path, decompress=False) as stream:
        for index, page in enumerate(iter_warc_pages(stream)):
            count_page("from_warc")
            yield page.page_url, page.html, page.charset, f"{path}#{index}"


def _page_candidates(
    page: tuple[str, bytes, str | None, str], source: str, policy: PagePolicy | None
) -> list[Record]:
    url, html, charset, where = page
    extraction = extract_page(html, url, source=source, headers_charset=charset, where=where)
    if policy is None:
        return extraction.records
    return apply_page_policy(extraction.records, extraction.meta, policy).records


class ReadWarcPages(beam.PTransform):
    """WARC files (paths, globs or a `warc.paths.gz` manifest) → their HTML pages' candidates.

    `policy`: the per-page image cap and meta robots opt-out (`pipeline.extract.page_policy`)
    applied to each page, as the crawl applies it to the pages it fetches."""

    def __init__(
        self,
        paths: tuple[str, ...],
        source: str = "warc",
        manifest_prefix: str = COMMON_CRAWL_PREFIX,
        policy: PagePolicy | None = None,
    ) -> None:
        super().__init__()
        self.paths = paths
        self.source = source
        self.manifest_prefix = manifest_prefix
        self.policy = policy

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        return (
            pipeline
            | "WarcFiles" >> MatchFiles(self.paths, self.manifest_prefix)
            | "Pages" >> beam.FlatMap(_warc_pages)
            | "Extract" >> beam.FlatMap(_page_candidates, source=self.source, policy=self.policy)
        )


def _wat_candidates(path: str, source: str, policy: PagePolicy | None) -> Iterator[Record]:
    with open_source(path, decompress=False) as stream:
        yield from iter_wat_candidates(stream, source, policy)


class ReadWatCandidates(beam.PTransform):
    """WAT files (Common Crawl's link metadata; paths, globs or a `wat.paths.gz` manifest) →
    candidates from their IMG links (`policy` as for `ReadWarcPages`)."""

    def __init__(
        self,
        paths: tuple[str, ...],
        source: str = "wat",
        manifest_prefix: str = COMMON_CRAWL_PREFIX,
        policy: PagePolicy | None = None,
    ) -> None:
        super().__init__()
        self.paths = paths
        self.source = source
        self.manifest_prefix = manifest_prefix
        self.policy = policy

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        return (
            pipeline
            | "WatFiles" >> MatchFiles(self.paths, self.manifest_prefix)
            | "Candidates" >> beam.FlatMap(_wat_candidates, source=self.source, policy=self.policy)
        )
