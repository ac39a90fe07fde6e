"""Read url+caption lists (Conceptual Captions, SBU, generic tables) as candidate records.

Every reader is a generator of `Record`s with `caption_source=LIST`, streaming the input
(parquet in batches), so it runs inside one Beam worker on files of any size. A row that
cannot be read becomes a record rejected with MALFORMED_ROW, keyed by its line (or row)
number and raw text, so it is counted and findable, never dropped. (The Beam path,
`pipeline.sources.splittable`, reads byte ranges of line files and names a row by its byte
offset instead: "byte 1234", `where` "list.tsv@1234".) A well-formed row with
a non-http(s) URL is rejected INVALID_URL, one with an empty caption NO_CAPTION. Blank
lines are not rows and are skipped. Duplicate rows are left to the dedupe stage.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq

from lait.dataset import storage
from lait.record import CaptionSource, Record, RejectReason, record_key
from lait.urls import InvalidUrlError, resolve_http_url
from pipeline.extract.candidates import normalise_caption
from pipeline.sources.streams import SourceFormatError, SourceInput, open_source, source_name

# How much of a malformed row the reject detail quotes.
MAX_DETAIL_RAW_CHARS = 200
TABLE_FORMATS = ("parquet", "csv", "tsv", "jsonl")
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip")


def malformed_row(
    *,
    source: str,
    origin: str,
    line_no: int,
    raw: str,
    problem: str,
    url: str = "",
    caption: str = "",
    unit: str = "line",
) -> Record:
    """A rejected MALFORMED_ROW record, keyed by (origin, line number, raw text) so it is unique
    within a file and the same on every rerun. `unit` "byte" names the row by its byte offset
    (`line_no` is then that offset)."""
    where = row_where(origin, line_no, unit)
    record = Record.candidate(
        source=source,
        url=url,
        caption=caption,
        caption_source=CaptionSource.LIST,
        where=where,
        key=record_key(f"malformed:{where}", raw),
    )
    quoted = raw if len(raw) <= MAX_DETAIL_RAW_CHARS else raw[:MAX_DETAIL_RAW_CHARS] + "…"
    return record.rejected(RejectReason.MALFORMED_ROW, f"{unit} {line_no}: {problem}: {quoted!r}")


def row_where(origin: str, position: int, unit: str = "line") -> str:
    """Where a row was seen: "list.tsv:42" (line or row number), "list.tsv@1234" (byte offset)."""
    return f"{origin}@{position}" if unit == "byte" else f"{origin}:{position}"


def list_record(*, source: str, url: str, caption: str, where: str = "") -> Record:
    """The record for a well-formed url+caption row: a candidate, or INVALID_URL / NO_CAPTION.

    `where` is the row's place ("list.tsv:42"), so a row repeated in a list is two sightings.
    """
    text = normalise_caption(caption)
    try:
        resolved = resolve_http_url(url)
    except InvalidUrlError as error:
        record = Record.candidate(
            source=source,
            url=url.strip(),
            caption=text,
            caption_source=CaptionSource.LIST,
            where=where,
        )
        return record.rejected(RejectReason.INVALID_URL, str(error))
    record = Record.candidate(
        source=source, url=resolved, caption=text, caption_source=CaptionSource.LIST, where=where
    )
    if not text:
        return record.rejected(RejectReason.NO_CAPTION, "empty caption")
    return record


def _decode_line(line: bytes | str, encoding: str) -> tuple[str, str | None]:
    """(text, problem): the line without its line break, and why it is unreadable if it is."""
    if isinstance(line, str):
        return line.rstrip("\r\n"), None
    body = line.rstrip(b"\r\n")
    try:
        return body.decode(encoding), None
    except UnicodeDecodeError as error:
        return body.decode(encoding, "backslashreplace"), f"undecodable bytes ({error.reason})"


def tsv_pair_row(
    line: bytes | str,
    *,
    source: str,
    origin: str,
    position: int,
    url_field: int,
    caption_field: int,
    num_fields: int = 2,
    encoding: str = "utf-8",
    unit: str = "line",
) -> Record | None:
    """The record of one headerless TSV line (None for a blank line): a candidate, or its
    MALFORMED_ROW / INVALID_URL / NO_CAPTION reject."""
    text, problem = _decode_line(line, encoding)
    if problem is None and not text.strip():
        return None
    fields = text.split("\t")
    if problem is None and len(fields) != num_fields:
        problem = f"expected {num_fields} tab-separated fields, got {len(fields)}"
    if problem is not None:
        return malformed_row(
            source=source, origin=origin, line_no=position, raw=text, problem=problem, unit=unit
        )
    url, caption = fields[url_field], fields[caption_field]
    if not url.strip():
        return malformed_row(
            source=source,
            origin=origin,
            line_no=position,
            raw=text,
            problem="empty url",
            caption=caption,
            unit=unit,
        )
    return list_record(
        source=source, url=url, caption=caption, where=row_where(origin, position, unit)
    )


def read_tsv_pairs(
    src: SourceInput,
    *,
    source: str,
    url_field: int,
    caption_field: int,
    num_fields: int = 2,
    encoding: str = "utf-8",
) -> Iterator[Record]:
    """Records from a headerless TSV whose `url_field`-th and `caption_field`-th fields
    (0-based) are the URL and caption and which has exactly `num_fields` fields per line."""
    origin = source_name(src)
    with open_source(src) as stream:
        for line_no, line in enumerate(stream, start=1):
            record = tsv_pair_row(
                line,
                source=source,
                origin=origin,
                position=line_no,
                url_field=url_field,
                caption_field=caption_field,
                num_fields=num_fields,
                encoding=encoding,
            )
            if record is not None:
                yield record


def read_conceptual_captions(
    src: SourceInput, *, source: str = "conceptual_captions", encoding: str = "utf-8"
) -> Iterator[Record]:
    """Conceptual Captions TSV (`caption<TAB>url`, no header), e.g. `Train_GCC-training.tsv`."""
    return read_tsv_pairs(src, source=source, url_field=1, caption_field=0, encoding=encoding)


def read_sbu_tsv(
    src: SourceInput, *, source: str = "sbu", encoding: str = "utf-8"
) -> Iterator[Record]:
    """SBU Captions as one TSV of `url<TAB>caption` lines (no header)."""
    return read_tsv_pairs(src, source=source, url_field=0, caption_field=1, encoding=encoding)


def read_sbu(
    urls: SourceInput,
    captions: SourceInput,
    *,
    source: str = "sbu",
    encoding: str = "utf-8",
) -> Iterator[Record]:
    """SBU Captions in its distribution form: `SBU_captioned_photo_dataset_urls.txt` and
    `SBU_captioned_photo_dataset_captions.txt`, one entry per line, aligned by line number.

    A line of either file that cannot be decoded, and every line of the longer file past
    the end of the shorter one, becomes a MALFORMED_ROW reject.
    """
    origin = f"{source_name(urls)}|{source_name(captions)}"
    with open_source(urls) as url_stream, open_source(captions) as caption_stream:
        url_lines, caption_lines = iter(url_stream), iter(caption_stream)
        line_no = 0
        while True:
            url_line = next(url_lines, None)
            caption_line = next(caption_lines, None)
            if url_line is None and caption_line is None:
                return
            line_no += 1
            url, url_problem = _decode_line(url_line or b"", encoding)
            caption, caption_problem = _decode_line(caption_line or b"", encoding)
            raw = f"{url}\t{caption}"
            problem = url_problem or caption_problem
            if url_line is None:
                problem = "captions file has more lines than urls file"
            elif caption_line is None:
                problem = "urls file has more lines than captions file"
            elif problem is None and not url.strip():
                problem = "empty url"
            if problem is not None:
                yield malformed_row(
                    source=source,
                    origin=origin,
                    line_no=line_no,
                    raw=raw,
                    problem=problem,
                    url=url.strip(),
                    caption=caption,
                )
            else:
                yield list_record(
                    source=source, url=url, caption=caption, where=f"{origin}:{line_no}"
                )


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in text)


def read_csv(
    src: SourceInput,
    *,
    source: str,
    url_column: str = "url",
    caption_column: str = "caption",
    delimiter: str = ",",
    encoding: str = "utf-8",
) -> Iterator[Record]:
    """Records from a CSV (or, with `delimiter="\\t"`, TSV) file with a header row.

    Quoted fields may span lines; a row's number is the line it ends on. Raises
    SourceFormatError when the header lacks one of the columns.
    """
    origin = source_name(src)
    with open_source(src) as stream:
        if isinstance(stream, io.TextIOBase):
            yield from _read_csv_rows(stream, source, origin, url_column, caption_column, delimiter)
            return
        # surrogateescape keeps undecodable bytes so that only their row is rejected.
        text_stream = io.TextIOWrapper(
            stream, encoding=encoding, errors="surrogateescape", newline=""
        )
        try:
            yield from _read_csv_rows(
                text_stream, source, origin, url_column, caption_column, delimiter
            )
        finally:
            text_stream.detach()  # leave the caller's (or fsspec's) stream to its owner


def _read_csv_rows(
    text_stream: Any,
    source: str,
    origin: str,
    url_column: str,
    caption_column: str,
    delimiter: str,
) -> Iterator[Record]:
    reader = csv.reader(text_stream, delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        return
    header = [name.strip().lstrip("\ufeff") for name in header]
    missing = [c for c in (url_column, caption_column) if c not in header]
    if missing:
        raise SourceFormatError(
            f"{origin or 'table'} has no column {missing[0]!r}; its columns are {header}. "
            "Set url_column / caption_column to the right names."
        )
    url_at, caption_at = header.index(url_column), header.index(caption_column)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield malformed_row(
                source=source,
                origin=origin,
                line_no=reader.line_num,
                raw="",
                problem=f"CSV error: {error}",
            )
            continue
        if not row or not any(field.strip() for field in row):
            continue
        raw = delimiter.join(row)
        problem = None
        if _has_surrogates(raw):
            raw = raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            problem = "undecodable bytes"
        elif len(row) != len(header):
            problem = f"expected {len(header)} fields, got {len(row)}"
        elif not row[url_at].strip():
            problem = "empty url"
        if problem is not None:
            yield malformed_row(
                source=source,
                origin=origin,
                line_no=reader.line_num,
                raw=raw,
                problem=problem,
            )
        else:
            yield list_record(
                source=source,
                url=row[url_at],
                caption=row[caption_at],
                where=f"{origin}:{reader.line_num}",
            )


def read_jsonl(
    src: SourceInput,
    *,
    source: str,
    url_column: str = "url",
    caption_column: str = "caption",
    encoding: str = "utf-8",
) -> Iterator[Record]:
    """Records from JSON Lines: one object per line holding the URL and caption as strings."""
    origin = source_name(src)
    with open_source(src) as stream:
        for line_no, line in enumerate(stream, start=1):
            record = jsonl_row(
                line,
                source=source,
                origin=origin,
                position=line_no,
                url_column=url_column,
                caption_column=caption_column,
                encoding=encoding,
            )
            if record is not None:
                yield record


def jsonl_row(
    line: bytes | str,
    *,
    source: str,
    origin: str,
    position: int,
    url_column: str = "url",
    caption_column: str = "caption",
    encoding: str = "utf-8",
    unit: str = "line",
) -> Record | None:
    """The record of one JSON Lines line (None for a blank line)."""
    text, problem = _decode_line(line, encoding)
    if problem is None and not text.strip():
        return None
    url = caption = None
    if problem is None:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as error:
            problem = f"invalid JSON ({error.msg})"
        else:
            if not isinstance(obj, dict):
                problem = f"expected a JSON object, got {type(obj).__name__}"
            else:
                url, caption = obj.get(url_column), obj.get(caption_column)
                problem = _pair_problem(url, caption, url_column, caption_column)
    if problem is not None or not isinstance(url, str) or not isinstance(caption, str):
        return malformed_row(
            source=source,
            origin=origin,
            line_no=position,
            raw=text,
            problem=problem or "malformed row",
            url=url if isinstance(url, str) else "",
            caption=caption if isinstance(caption, str) else "",
            unit=unit,
        )
    return list_record(
        source=source, url=url, caption=caption, where=row_where(origin, position, unit)
    )


def _pair_problem(url: Any, caption: Any, url_column: str, caption_column: str) -> str | None:
    for name, value in ((url_column, url), (caption_column, caption)):
        if value is None:
            return f"missing or null {name!r}"
        if not isinstance(value, str):
            return f"{name!r} is {type(value).__name__}, not a string"
    if not url.strip():
        return "empty url"
    return None


def _as_text(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value  # reported by _pair_problem as not a string
    return value


@contextlib.contextmanager
def open_parquet(src: SourceInput) -> Iterator[pq.ParquetFile]:
    """A path is opened by path through pyarrow's filesystem (see `lait.dataset.storage`: a
    Python file object under Arrow's threads can abort the process at exit); a stream given
    open is read as it is."""
    if isinstance(src, str | os.PathLike):
        fs, path = storage.filesystem(src)
        with storage.open_parquet(fs, path) as parquet:
            yield parquet
    else:
        with open_source(src, decompress=False) as stream:
            yield pq.ParquetFile(stream)


def read_parquet(
    src: SourceInput,
    *,
    source: str,
    url_column: str = "url",
    caption_column: str = "caption",
    batch_size: int = 8192,
) -> Iterator[Record]:
    """Records from a parquet file, read `batch_size` rows at a time (only the two columns).

    Row numbers in reject details count from 1. Raises SourceFormatError when the file
    lacks one of the columns.
    """
    origin = source_name(src)
    with open_parquet(src) as parquet:
        yield from parquet_rows(
            parquet,
            source=source,
            origin=origin,
            url_column=url_column,
            caption_column=caption_column,
            batch_size=batch_size,
        )


def parquet_rows(
    parquet: pq.ParquetFile,
    *,
    source: str,
    origin: str,
    url_column: str = "url",
    caption_column: str = "caption",
    batch_size: int = 8192,
    row_groups: range | None = None,
) -> Iterator[Record]:
    """The records of an open parquet file's `row_groups` (default: all), rows numbered from 1
    across the whole file, so a row has the same number whichever group range reads it."""
    names = parquet.schema_arrow.names
    missing = [c for c in (url_column, caption_column) if c not in names]
    if missing:
        raise SourceFormatError(
            f"{origin or 'parquet file'} has no column {missing[0]!r}; its columns are "
            f"{names}. Set url_column / caption_column to the right names."
        )
    groups = range(parquet.num_row_groups) if row_groups is None else row_groups
    if not groups:
        return
    row_no = sum(parquet.metadata.row_group(i).num_rows for i in range(groups.start))
    for batch in parquet.iter_batches(
        batch_size=batch_size, columns=[url_column, caption_column], row_groups=list(groups)
    ):
        urls = batch.column(url_column).to_pylist()
        captions = batch.column(caption_column).to_pylist()
        for url, caption in zip(urls, captions, strict=True):
            row_no += 1
            url, caption = _as_text(url), _as_text(caption)
            problem = _pair_problem(url, caption, url_column, caption_column)
            if problem is not None:
                yield malformed_row(
                    source=source,
                    origin=origin,
                    line_no=row_no,
                    raw=repr((url, caption)),
                    problem=problem,
                    url=url if isinstance(url, str) else "",
                    caption=caption if isinstance(caption, str) else "",
                )
            else:
                yield list_record(
                    source=source, url=url, caption=caption, where=f"{origin}:{row_no}"
                )


def table_format(path: str) -> str:
    """The table format a file name implies (compression suffixes ignored)."""
    name = path.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    for fmt, suffixes in (
        ("parquet", (".parquet", ".pq")),
        ("csv", (".csv",)),
        ("tsv", (".tsv",)),
        ("jsonl", (".jsonl", ".ndjson", ".json")),
    ):
        if name.endswith(suffixes):
            return fmt
    raise SourceFormatError(
        f"cannot tell the table format of {path!r}; name it *.parquet, *.csv, *.tsv or "
        f"*.jsonl, or pass format= one of {TABLE_FORMATS}"
    )


def read_url_caption_table(
    src: SourceInput,
    *,
    source: str,
    url_column: str = "url",
    caption_column: str = "caption",
    format: str | None = None,
) -> Iterator[Record]:
    """Records from a parquet, CSV, TSV (with header) or JSONL table of URLs and captions.

    The format is `format`, else inferred from the file name.
    """
    fmt = format or table_format(source_name(src))
    if fmt == "parquet":
        return read_parquet(
            src, source=source, url_column=url_column, caption_column=caption_column
        )
    if fmt in ("csv", "tsv"):
        return read_csv(
            src,
            source=source,
            url_column=url_column,
            caption_column=caption_column,
            delimiter="\t" if fmt == "tsv" else ",",
        )
    if fmt == "jsonl":
        return read_jsonl(src, source=source, url_column=url_column, caption_column=caption_column)
    raise SourceFormatError(f"unknown table format {fmt!r}; use one of {TABLE_FORMATS}")
