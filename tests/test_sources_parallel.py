"""Sources read in parallel: lists in byte ranges / row groups, globs, Common Crawl manifests.

Real files on disk, read by the real Beam DirectRunner (and the splittable DoFn driven range by
range); every row must come out exactly once, the same rows the one-pass readers give.
"""

from __future__ import annotations

import collections
import gzip
import itertools
import json
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.restriction_trackers import OffsetRestrictionTracker
from apache_beam.testing.util import assert_that, equal_to
from test_sources import CC_TSV, build_warc, build_wat

from lait.record import Record, RejectReason, Status
from pipeline.config import ListSource
from pipeline.extract import extract_candidates
from pipeline.read_sources import (
    ListFile,
    ReadLists,
    ReadWarcPages,
    ReadWatCandidates,
    _ListFileRanges,
    _ReadListFile,
    list_files,
    read_list,
)
from pipeline.sources import SourceFormatError, iter_warc_pages, iter_wat_candidates
from pipeline.sources.matching import NoMatchingFiles, expand_input

JSONL = (
    b'{"url": "http://x.example/a.jpg", "caption": "A red kite"}\n'
    b"not json at all\n"
    b"\n"
    b'{"url": "http://x.example/b.jpg", "caption": "A blue kite"}\r\n'
    b'["a", "list"]\n'
    b'{"url": "http://x.example/c.jpg", "caption": 7}\n'
    b'{"url": "ftp://x.example/d.jpg", "caption": "ftp"}\n'
    b'{"url": "http://x.example/e.jpg", "caption": "A last kite"}'
)


def row(r: Record) -> tuple[Any, ...]:
    """What a row is, without where it was seen (line number vs byte offset)."""
    return (r.source, r.url, r.caption, r.status, r.reject_reason)


def read_in_ranges(item: ListFile) -> list[Record]:
    """Drive the splittable DoFn as a runner does: initial restriction, split, each range."""
    provider = _ListFileRanges()
    records = []
    for restriction in provider.split(item, provider.initial_restriction(item)):
        tracker = OffsetRestrictionTracker(restriction)
        records.extend(_ReadListFile().process(item, tracker=tracker))
        tracker.check_done()  # the range was read to its end
    return records


def run_lists(lists: tuple[ListSource, ...], **kwargs: Any) -> list[tuple[Any, ...]]:
    with beam.Pipeline() as pipeline:
        out = pipeline | ReadLists(lists, **kwargs) | beam.Map(lambda r: (row(r), r.key))
        expected = [
            (row(r), r.key)
            for source in lists
            for item in list_files(source)
            for r in read_list(ListSource(item.path, **_settings(source)))
        ]
        assert_that(out, equal_to(expected))
    return expected


def _settings(source: ListSource) -> dict[str, Any]:
    return {
        "format": source.format,
        "name": source.name,
        "url_column": source.url_column,
        "caption_column": source.caption_column,
    }


@pytest.mark.parametrize("split_bytes", [1, 7, 40, 64, 10_000])
def test_cc_tsv_in_byte_ranges_reads_every_row_once(tmp_path: Path, split_bytes: int) -> None:
    path = tmp_path / "cc.tsv"
    path.write_bytes((CC_TSV + b"\n") * 3)
    item = ListFile(str(path), ListSource(str(path), format="cc", name="cc3m"), split_bytes)
    whole = list(read_list(ListSource(str(path), format="cc", name="cc3m")))
    records = read_in_ranges(item)
    assert collections.Counter(map(row, records)) == collections.Counter(map(row, whole))
    assert len(records) == len(whole) == 3 * 10  # 11 lines, one blank, per copy
    # each row is named by the offset of its line, and malformed rows stay unique
    line_starts = [0]
    for line in ((CC_TSV + b"\n") * 3).splitlines(keepends=True)[:-1]:
        line_starts.append(line_starts[-1] + len(line))
    offsets = sorted(int(r.reject_detail.split()[1].rstrip(":")) for r in malformed(records))
    assert set(offsets) <= set(line_starts)
    assert len({r.key for r in malformed(records)}) == len(malformed(records)) == 3 * 5


def malformed(records: list[Record]) -> list[Record]:
    return [r for r in records if r.reject_reason is RejectReason.MALFORMED_ROW]


def test_a_big_list_is_cut_into_many_ranges(tmp_path: Path) -> None:
    path = tmp_path / "cc.tsv"
    path.write_bytes(
        b"".join(b"caption %d\thttp://x.example/%d.jpg\n" % (i, i) for i in range(500))
    )
    item = ListFile(str(path), ListSource(str(path)), split_bytes=1000)
    provider = _ListFileRanges()
    ranges = list(provider.split(item, provider.initial_restriction(item)))
    assert len(ranges) >= 15
    assert ranges[0].start == 0 and ranges[-1].stop == path.stat().st_size
    assert all(a.stop == b.start for a, b in itertools.pairwise(ranges))
    records = read_in_ranges(item)
    assert sorted(r.url for r in records) == sorted(f"http://x.example/{i}.jpg" for i in range(500))


def test_lists_on_the_direct_runner_every_format(tmp_path: Path) -> None:
    (tmp_path / "cc.tsv").write_bytes(CC_TSV)
    (tmp_path / "sbu.tsv").write_bytes(b"http://s.example/1.jpg\tone\nbroken line\n")
    (tmp_path / "rows.jsonl").write_bytes(JSONL)
    (tmp_path / "rows.jsonl.gz").write_bytes(gzip.compress(JSONL))
    (tmp_path / "table.csv").write_bytes(
        b'url,caption\nhttp://c.example/1.jpg,"two\nlines"\nhttp://c.example/2.jpg\n'
    )
    (tmp_path / "sbu_urls.txt").write_bytes(b"http://s.example/a.jpg\nhttp://s.example/b.jpg\n")
    (tmp_path / "sbu_captions.txt").write_bytes(b"first\n")
    table = pa.table(
        {
            "URL": [f"http://p.example/{i}.jpg" for i in range(10)] + [None],
            "TEXT": [f"picture {i}" for i in range(10)] + ["no url"],
        }
    )
    pq.write_table(table, tmp_path / "table.parquet", row_group_size=3)
    lists = (
        ListSource(str(tmp_path / "cc.tsv"), format="cc"),
        ListSource(str(tmp_path / "sbu.tsv"), format="sbu"),
        ListSource(str(tmp_path / "rows.jsonl"), format="jsonl"),
        ListSource(str(tmp_path / "rows.jsonl.gz"), format="jsonl", name="gz"),
        ListSource(str(tmp_path / "table.csv"), format="csv"),
        ListSource(
            str(tmp_path / "sbu_urls.txt"),
            format="sbu",
            captions_path=str(tmp_path / "sbu_captions.txt"),
            name="sbu2",
        ),
        ListSource(
            str(tmp_path / "table.parquet"),
            format="parquet",
            url_column="URL",
            caption_column="TEXT",
        ),
    )
    # Keys include where a malformed row was seen, so compare rows; keys of good rows are
    # (url, caption) hashes and must agree exactly.
    with beam.Pipeline() as pipeline:
        out = pipeline | ReadLists(lists, split_bytes=16) | beam.Map(row)
        expected = [row(r) for source in lists for r in read_list(source)]
        assert_that(out, equal_to(expected))
    statuses = collections.Counter(status for _, _, _, status, _ in expected)
    assert statuses[Status.CANDIDATE] == 3 + 1 + 3 + 3 + 1 + 1 + 10
    assert len(expected) == 10 + 2 + 7 + 7 + 2 + 2 + 11


def test_parquet_row_groups_keep_the_row_numbers(tmp_path: Path) -> None:
    table = pa.table(
        {"url": [f"http://p.example/{i}.jpg" for i in range(7)], "caption": ["c"] * 6 + [None]}
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=2)
    source = ListSource(str(path), format="parquet")
    item = ListFile(str(path), source)
    provider = _ListFileRanges()
    assert len(list(provider.split(item, provider.initial_restriction(item)))) == 4
    records = read_in_ranges(item)
    whole = list(read_list(source))
    assert [(r.key, r.reject_detail) for r in records] == [(r.key, r.reject_detail) for r in whole]
    assert whole[-1].reject_detail.startswith("line 7: missing or null 'caption'")


def test_a_glob_of_lists(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"part-{i}.tsv").write_bytes(b"caption %d\thttp://g.example/%d.jpg\n" % (i, i))
    (tmp_path / "other.txt").write_bytes(b"not matched\n")
    expected = run_lists((ListSource(str(tmp_path / "part-*.tsv"), format="cc"),))
    assert sorted(r[1] for r, _ in expected) == [f"http://g.example/{i}.jpg" for i in range(3)]


def test_a_glob_that_matches_nothing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NoMatchingFiles, match="matches no file"):
        list(expand_input(str(tmp_path / "nothing-*.warc.gz")))
    with pytest.raises(Exception, match="matches no file"), beam.Pipeline() as pipeline:
        _ = pipeline | ReadLists((ListSource(str(tmp_path / "none-*.tsv")),))


def write_archives(folder: Path) -> tuple[list[Path], list[Path]]:
    warcs, wats = [], []
    for i in range(2):
        warc = folder / "crawl-data" / f"segment-{i}" / "warc" / f"CC-{i}.warc.gz"
        wat = folder / "crawl-data" / f"segment-{i}" / "wat" / f"CC-{i}.warc.wat.gz"
        warc.parent.mkdir(parents=True)
        wat.parent.mkdir(parents=True)
        warc.write_bytes(build_warc(True))
        wat.write_bytes(build_wat())
        warcs.append(warc)
        wats.append(wat)
    return warcs, wats


def test_common_crawl_manifests_and_globs(tmp_path: Path) -> None:
    warcs, wats = write_archives(tmp_path)
    manifest = tmp_path / "wat.paths.gz"
    relative = [str(p.relative_to(tmp_path)) for p in wats]
    manifest.write_bytes(gzip.compress(("\n".join(relative) + "\n").encode()))
    prefix = str(tmp_path) + "/"
    assert list(expand_input(str(manifest), prefix)) == [str(p) for p in wats]

    expected_wat = [
        (r.url, r.caption, r.reject_reason, r.key)
        for path in wats
        for r in iter_wat_candidates(str(path), "cc-wat")
    ]
    expected_warc = [
        (r.url, r.caption, r.page_url)
        for path in warcs
        for page in iter_warc_pages(str(path))
        for r in extract_candidates(page.html, page.page_url, source="warc")
    ]
    with beam.Pipeline() as pipeline:
        wat = pipeline | "Wat" >> ReadWatCandidates(
            (str(manifest),), source="cc-wat", manifest_prefix=prefix
        )
        warc = pipeline | "Warc" >> ReadWarcPages(
            (str(tmp_path / "crawl-data" / "*" / "warc" / "*.warc.gz"),)
        )
        assert_that(
            wat | "W" >> beam.Map(lambda r: (r.url, r.caption, r.reject_reason, r.key)),
            equal_to(expected_wat),
            label="wat",
        )
        assert_that(
            warc | "A" >> beam.Map(lambda r: (r.url, r.caption, r.page_url)),
            equal_to(expected_warc),
            label="warc",
        )
    assert len(expected_wat) == 16 and len(expected_warc) == 10


def test_manifest_lines_absolute_relative_and_comments(tmp_path: Path) -> None:
    manifest = tmp_path / "warc.paths"
    manifest.write_text("# a comment\n\ncrawl-data/a.warc.gz\n/abs/b.warc.gz\ns3://b/c.warc.gz\n")
    assert list(expand_input(str(manifest), "gs://mirror/cc")) == [
        "gs://mirror/cc/crawl-data/a.warc.gz",
        "/abs/b.warc.gz",
        "s3://b/c.warc.gz",
    ]
    assert next(expand_input(str(manifest))) == (
        "https://data.commoncrawl.org/crawl-data/a.warc.gz"
    )


def test_jsonl_rows_split_anywhere(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(JSONL)
    source = ListSource(str(path), format="jsonl")
    whole = list(read_list(source))
    for split_bytes in range(1, len(JSONL) + 2, 5):
        records = read_in_ranges(ListFile(str(path), source, split_bytes))
        assert sorted(map(row, records), key=repr) == sorted(map(row, whole), key=repr)
    assert json.loads(JSONL.splitlines()[0])["caption"] == "A red kite"


def test_empty_files_give_no_rows(tmp_path: Path) -> None:
    (tmp_path / "empty.tsv").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_bytes(b"\n\n")
    empty = pa.table({"url": pa.array([], pa.string()), "caption": pa.array([], pa.string())})
    pq.write_table(empty, tmp_path / "empty.parquet")
    lists = (
        ListSource(str(tmp_path / "empty.tsv")),
        ListSource(str(tmp_path / "blank.jsonl"), format="jsonl"),
        ListSource(str(tmp_path / "empty.parquet"), format="parquet"),
    )
    for source in lists:
        assert read_in_ranges(ListFile(source.path, source, split_bytes=1)) == []
    assert run_lists(lists, split_bytes=1) == []


def test_sbu_two_files_are_named_one_by_one(tmp_path: Path) -> None:
    source = ListSource(str(tmp_path / "urls-*.txt"), format="sbu", captions_path="c.txt")
    with pytest.raises(SourceFormatError, match="one by one"):
        list(list_files(source))
    with pytest.raises(ValueError, match="split_bytes"):
        ReadLists((source,), split_bytes=0)
