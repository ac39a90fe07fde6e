"""Beam transforms over the pure readers in `pipeline.sources` and `pipeline.extract`.

Each file is read by one worker (the readers stream, so any size fits), then the records
are reshuffled so the expensive stages downstream spread over all workers.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam

from lait.record import Record
from pipeline.config import ListSource
from pipeline.extract import extract_candidates
from pipeline.outcomes import count_page
from pipeline.sources import (
    iter_warc_pages,
    iter_wat_candidates,
    open_source,
    read_conceptual_captions,
    read_sbu,
    read_sbu_tsv,
    read_url_caption_table,
)


def read_list(source: ListSource) -> Iterator[Record]:
    """Every candidate (and malformed-row reject) of one url+caption list."""
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


class ReadLists(beam.PTransform):
    """url+caption lists in the config → candidate records."""

    def __init__(self, lists: tuple[ListSource, ...]) -> None:
        super().__init__()
        self.lists = lists

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        return (
            pipeline
            | "ListFiles" >> beam.Create(list(self.lists))
            | "ReadList" >> beam.FlatMap(read_list)
        )


def _warc_pages(path: str) -> Iterator[tuple[str, bytes, str | None, str]]:
    """(page URL, HTML, charset, where: the file and the page's place in it)."""
    with open_source(path, decompress=False) as stream:
        for index, page in enumerate(iter_warc_pages(stream)):
            count_page("from_warc")
            yield page.page_url, page.html, page.charset, f"{path}#{index}"


class ReadWarcPages(beam.PTransform):
    """WARC files → the candidates of their HTML responses."""

    def __init__(self, paths: tuple[str, ...], source: str = "warc") -> None:
        super().__init__()
        self.paths = paths
        self.source = source

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        source = self.source
        return (
            pipeline
            | "WarcFiles" >> beam.Create(sorted(self.paths))
            | "Pages" >> beam.FlatMap(_warc_pages)
            | "SpreadPages" >> beam.Reshuffle()
            | "Extract"
            >> beam.FlatMapTuple(
                lambda url, html, charset, where: extract_candidates(
                    html, url, source=source, headers_charset=charset, where=where
                )
            )
        )


def _wat_candidates(path: str, source: str) -> Iterator[Record]:
    with open_source(path, decompress=False) as stream:
        yield from iter_wat_candidates(stream, source)


class ReadWatCandidates(beam.PTransform):
    """WAT files (Common Crawl's link metadata) → candidates from their IMG links."""

    def __init__(self, paths: tuple[str, ...], source: str = "wat") -> None:
        super().__init__()
        self.paths = paths
        self.source = source

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        return (
            pipeline
            | "WatFiles" >> beam.Create(sorted(self.paths))
            | "Candidates" >> beam.FlatMap(_wat_candidates, source=self.source)
        )
