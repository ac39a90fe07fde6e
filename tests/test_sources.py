"""Source readers: url+caption lists (CC, SBU, CSV, JSONL, parquet) and WARC/WAT archives."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from lait.record import CaptionSource, Record, RejectReason, Stage, Status, record_key
from pipeline.extract import extract_candidates
from pipeline.sources import (
    SourceFormatError,
    WarcReadError,
    iter_warc_pages,
    iter_wat_candidates,
    read_conceptual_captions,
    read_csv,
    read_jsonl,
    read_parquet,
    read_sbu,
    read_sbu_tsv,
    read_url_caption_table,
)


def reasons(records: list[Record]) -> list[RejectReason | None]:
    return [r.reject_reason for r in records]


def assert_list_records(records: list[Record], source: str) -> None:
    for r in records:
        assert r.source == source and r.caption_source is CaptionSource.LIST
        if r.status is Status.CANDIDATE:
            assert r.key == record_key(r.url, r.caption) and r.url.startswith("http")
        else:
            assert r.reject_stage is Stage.EXTRACT


def malformed(records: list[Record]) -> list[Record]:
    return [r for r in records if r.reject_reason is RejectReason.MALFORMED_ROW]


# -- Conceptual Captions ----------------------------------------------------------------------

CC_TSV = (
    b"a dog running on the beach\thttp://img.example.com/dog.jpg\n"
    b"  actor attends the premiere  \t https://img.example.com/actor.jpg \r\n"
    b"\n"
    b"only one field\n"
    b"too\tmany\tfields\n"
    b"caption with empty url\t   \n"
    b"an ftp picture\tftp://img.example.com/x.jpg\n"
    b"\thttp://img.example.com/no-caption.jpg\n"
    b"caf\xe9 in latin-1\thttp://img.example.com/cafe.jpg\n"
    b"only one field\n"
    b"last line without newline\thttp://img.example.com/last.jpg"
)


def test_conceptual_captions_tsv_rows_and_rejects() -> None:
    records = list(read_conceptual_captions(io.BytesIO(CC_TSV), source="cc3m"))
    assert_list_records(records, "cc3m")
    assert reasons(records) == [
        None,
        None,
        RejectReason.MALFORMED_ROW,  # one field
        RejectReason.MALFORMED_ROW,  # three fields
        RejectReason.MALFORMED_ROW,  # empty url
        RejectReason.INVALID_URL,
        RejectReason.NO_CAPTION,
        RejectReason.MALFORMED_ROW,  # undecodable bytes
        RejectReason.MALFORMED_ROW,  # the same bad line again, later
        None,
    ]
    assert (records[0].caption, records[0].url) == (
        "a dog running on the beach",
        "http://img.example.com/dog.jpg",
    )
    assert (records[1].caption, records[1].url) == (
        "actor attends the premiere",
        "https://img.example.com/actor.jpg",
    )
    details = [r.reject_detail or "" for r in malformed(records)]
    assert details[0].startswith("line 4: expected 2 tab-separated fields, got 1")
    assert details[2].startswith("line 6: empty url")
    assert "undecodable" in details[3]
    # identical bad lines at different positions still get distinct keys
    assert len({r.key for r in malformed(records)}) == 5


def test_malformed_keys_are_stable_across_reruns(tmp_path: Path) -> None:
    path = tmp_path / "cc.tsv"
    path.write_bytes(CC_TSV)
    first = list(read_conceptual_captions(str(path)))
    second = list(read_conceptual_captions(path))
    assert [r.key for r in first] == [r.key for r in second]
    assert first[0].source == "conceptual_captions"


def test_gzipped_tsv_by_path_and_text_stream(tmp_path: Path) -> None:
    path = tmp_path / "Train_GCC-training.tsv.gz"
    path.write_bytes(gzip.compress(CC_TSV))
    from_gzip = list(read_conceptual_captions(str(path)))
    assert len(from_gzip) == 10 and from_gzip[0].url == "http://img.example.com/dog.jpg"
    text = io.StringIO("a cat\thttp://img.example.com/cat.jpg\n")
    assert only_record(read_conceptual_captions(text)).caption == "a cat"


def only_record(records: Any) -> Record:
    listed = list(records)
    assert len(listed) == 1, listed
    return listed[0]


# -- SBU --------------------------------------------------------------------------------------


def test_sbu_two_aligned_files(tmp_path: Path) -> None:
    urls = tmp_path / "SBU_captioned_photo_dataset_urls.txt"
    captions = tmp_path / "SBU_captioned_photo_dataset_captions.txt"
    urls.write_bytes(
        b"http://static.flickr.com/1/a.jpg\nhttp://static.flickr.com/2/b.jpg\n"
        b"\nhttp://static.flickr.com/4/d.jpg\nhttp://static.flickr.com/5/e.jpg\n"
    )
    captions.write_bytes(b"Man sits on a bench\nbad \xff bytes\nno url here\nA red barn\n")
    records = list(read_sbu(urls, captions))
    assert_list_records(records, "sbu")
    assert [(r.url, r.caption) for r in records if r.status is Status.CANDIDATE] == [
        ("http://static.flickr.com/1/a.jpg", "Man sits on a bench"),
        ("http://static.flickr.com/4/d.jpg", "A red barn"),
    ]
    details = [r.reject_detail or "" for r in malformed(records)]
    assert len(details) == 3
    assert details[0].startswith("line 2: undecodable bytes")
    assert details[1].startswith("line 3: empty url")
    assert details[2].startswith("line 5: urls file has more lines than captions file")
    assert malformed(records)[2].url == "http://static.flickr.com/5/e.jpg"


def test_sbu_captions_file_longer_than_urls_file() -> None:
    records = list(read_sbu(io.BytesIO(b"http://x.example/a.jpg\n"), io.BytesIO(b"a\nb\nc\n")))
    assert reasons(records) == [None, RejectReason.MALFORMED_ROW, RejectReason.MALFORMED_ROW]
    assert len({r.key for r in records}) == 3


def test_sbu_single_tsv() -> None:
    data = b"http://x.example/a.jpg\tA photo of a lake\nhttp://x.example/b.jpg\n"
    records = list(read_sbu_tsv(io.BytesIO(data)))
    assert reasons(records) == [None, RejectReason.MALFORMED_ROW]
    assert (records[0].url, records[0].caption) == ("http://x.example/a.jpg", "A photo of a lake")


# -- CSV / JSONL / parquet --------------------------------------------------------------------


def test_csv_with_quoted_fields_and_bad_rows() -> None:
    data = (
        "\ufeffid,URL,TEXT\n"
        '1,http://x.example/a.jpg,"A caption, with a comma"\n'
        '2,http://x.example/b.jpg,"A caption\nover two lines"\n'
        "3,http://x.example/c.jpg\n"
        "4,,empty url\n"
        "5,mailto:me@x.example,not a url\n"
    ).encode() + b"6,http://x.example/f.jpg,bad \xfe byte\n7,http://x.example/g.jpg,fine\n"
    records = list(
        read_csv(io.BytesIO(data), source="laion", url_column="URL", caption_column="TEXT")
    )
    assert_list_records(records, "laion")
    assert reasons(records) == [
        None,
        None,
        RejectReason.MALFORMED_ROW,
        RejectReason.MALFORMED_ROW,
        RejectReason.INVALID_URL,
        RejectReason.MALFORMED_ROW,
        None,
    ]
    assert records[0].caption == "A caption, with a comma"
    text_stream = io.StringIO("url,caption\nhttp://x.example/a.jpg,From text\n")
    assert only_record(read_csv(text_stream, source="laion")).caption == "From text"
    assert records[1].caption == "A caption over two lines"
    details = [r.reject_detail or "" for r in malformed(records)]
    assert details[0].startswith("line 5: expected 3 fields, got 2")
    assert details[1].startswith("line 6: empty url")
    assert details[2].startswith("line 8: undecodable bytes")


def test_csv_missing_column_is_a_clear_error() -> None:
    with pytest.raises(SourceFormatError, match="no column 'caption'"):
        list(read_csv(io.BytesIO(b"url,text\nhttp://x.example/a.jpg,a\n"), source="s"))


def test_jsonl_rows_and_rejects() -> None:
    lines = [
        json.dumps({"url": "http://x.example/a.jpg", "caption": "A fox", "extra": 1}),
        "{not json",
        json.dumps(["http://x.example/b.jpg", "a list"]),
        json.dumps({"url": "http://x.example/c.jpg"}),
        json.dumps({"url": "http://x.example/d.jpg", "caption": 42}),
        json.dumps({"url": "", "caption": "empty"}),
        "",
        json.dumps({"url": "file:///etc/passwd", "caption": "local"}),
    ]
    data = "\n".join(lines).encode() + b'\n{"url": "http://x.example/e.jpg", "caption": "\xff"}\n'
    records = list(read_jsonl(io.BytesIO(data), source="j"))
    assert_list_records(records, "j")
    assert reasons(records) == [None] + [RejectReason.MALFORMED_ROW] * 5 + [
        RejectReason.INVALID_URL,
        RejectReason.MALFORMED_ROW,
    ]
    details = [r.reject_detail or "" for r in malformed(records)]
    assert "invalid JSON" in details[0]
    assert "expected a JSON object" in details[1]
    assert "missing or null 'caption'" in details[2]
    assert "not a string" in details[3]
    assert "empty url" in details[4]
    assert "undecodable" in details[5] and details[5].startswith("line 9")


def test_parquet_in_batches_with_custom_columns_and_nulls(tmp_path: Path) -> None:
    n = 25
    urls: list[str | None] = [f"https://x.example/{i}.jpg" for i in range(n)]
    captions: list[str | None] = [f"caption number {i}" for i in range(n)]
    urls[3], captions[7], urls[11] = None, None, "  "
    path = tmp_path / "pairs.parquet"
    table = pa.table({"URL": urls, "TEXT": captions, "similarity": [0.3] * n})
    pq.write_table(table, path, row_group_size=10)
    records = list(
        read_parquet(str(path), source="pq", url_column="URL", caption_column="TEXT", batch_size=4)
    )
    assert_list_records(records, "pq")
    assert len(records) == n
    assert [i for i, r in enumerate(records) if r.reject_reason] == [3, 7, 11]
    assert all(r.reject_reason is RejectReason.MALFORMED_ROW for r in malformed(records))
    assert (malformed(records)[0].reject_detail or "").startswith("line 4: missing or null 'URL'")
    assert records[24].caption == "caption number 24"
    with pytest.raises(SourceFormatError, match="no column 'url'"):
        list(read_parquet(path, source="pq"))


def test_table_reader_infers_format_from_name(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"url": ["http://x.example/a.jpg"], "caption": ["A"]}), tmp_path / "t.parquet"
    )
    (tmp_path / "t.csv").write_text("url,caption\nhttp://x.example/a.jpg,A\n")
    (tmp_path / "t.tsv").write_text("url\tcaption\nhttp://x.example/a.jpg\tA\n")
    (tmp_path / "t.jsonl.gz").write_bytes(
        gzip.compress(b'{"url": "http://x.example/a.jpg", "caption": "A"}\n')
    )
    for name in ("t.parquet", "t.csv", "t.tsv", "t.jsonl.gz"):
        record = only_record(read_url_caption_table(str(tmp_path / name), source="t"))
        assert (record.url, record.caption, record.status) == (
            "http://x.example/a.jpg",
            "A",
            Status.CANDIDATE,
        )
    with pytest.raises(SourceFormatError, match="cannot tell the table format"):
        read_url_caption_table(str(tmp_path / "t.txt"), source="t")


# -- WARC -------------------------------------------------------------------------------------


def http_response(
    writer: WARCWriter,
    url: str,
    body: bytes,
    *,
    status: str = "200 OK",
    content_type: str = "text/html; charset=utf-8",
    extra_headers: list[tuple[str, str]] | None = None,
) -> None:
    headers = [("Content-Type", content_type), *(extra_headers or [])]
    http_headers = StatusAndHeaders(status, headers, protocol="HTTP/1.1")
    record = writer.create_warc_record(
        url, "response", payload=io.BytesIO(body), length=len(body), http_headers=http_headers
    )
    writer.write_record(record)


PAGE_HTML = (
    b'<html><body><p>A sunny meadow <img src="/img/meadow.jpg" alt="Meadow"></p>'
    b'<a href="/next">next</a></body></html>'
)


def build_warc(gzip_records: bool) -> bytes:
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=gzip_records)
    writer.write_record(writer.create_warcinfo_record("test.warc", {"software": "tests"}))
    request = StatusAndHeaders("GET / HTTP/1.1", [("Host", "a.example")], is_http_request=True)
    writer.write_record(
        writer.create_warc_record("http://a.example/", "request", http_headers=request)
    )
    http_response(writer, "http://a.example/", PAGE_HTML)
    http_response(writer, "http://a.example/missing", b"<p>not found</p>", status="404 Not Found")
    http_response(writer, "http://a.example/cat.jpg", b"\xff\xd8\xff", content_type="image/jpeg")
    latin = '<p>Caf\xe9 <img src="c.jpg" alt="Caf\xe9 cr\xe8me"></p>'.encode("latin-1")
    http_response(
        writer, "http://b.example/fr/", latin, content_type="text/html; charset=ISO-8859-1"
    )
    http_response(
        writer,
        "http://c.example/gz",
        gzip.compress(b'<img src="z.jpg" alt="Zipped">'),
        content_type="application/xhtml+xml",
        extra_headers=[("Content-Encoding", "gzip")],
    )
    return buffer.getvalue()


@pytest.mark.parametrize("gzip_records", [True, False])
def test_warc_pages_round_trip(tmp_path: Path, gzip_records: bool) -> None:
    path = tmp_path / ("crawl.warc.gz" if gzip_records else "crawl.warc")
    path.write_bytes(build_warc(gzip_records))
    pages = list(iter_warc_pages(str(path)))
    assert [p.page_url for p in pages] == [
        "http://a.example/",
        "http://b.example/fr/",
        "http://c.example/gz",
    ]
    assert pages[0].html == PAGE_HTML and pages[0].charset == "utf-8"
    assert pages[1].charset == "cp1252"
    assert pages[2].html == b'<img src="z.jpg" alt="Zipped">' and pages[2].charset is None
    records = [
        r
        for p in pages
        for r in extract_candidates(p.html, p.page_url, source="warc", headers_charset=p.charset)
    ]
    assert [(r.url, r.caption) for r in records] == [
        ("http://a.example/img/meadow.jpg", "Meadow"),
        ("http://a.example/img/meadow.jpg", "A sunny meadow"),
        ("http://b.example/fr/c.jpg", "Café crème"),
        ("http://b.example/fr/c.jpg", "Café"),
        ("http://c.example/z.jpg", "Zipped"),
    ]


def test_warc_from_stream_and_body_cap() -> None:
    pages = list(iter_warc_pages(io.BytesIO(build_warc(True)), max_bytes=20))
    assert len(pages) == 3
    page_url, html, charset = pages[0]
    assert (page_url, html, charset) == ("http://a.example/", PAGE_HTML[:20], "utf-8")


def test_not_a_warc_is_a_clear_error() -> None:
    with pytest.raises(WarcReadError, match="cannot read"):
        list(iter_warc_pages(io.BytesIO(b"\x00\x01 not an archive\n" * 10)))
    whole = build_warc(False)
    truncated = whole[: whole.index(b"WARC/1.0", 10) + 30]  # cut inside a record's headers
    with pytest.raises(WarcReadError, match="complete"):
        list(iter_warc_pages(io.BytesIO(truncated)))


# -- WAT --------------------------------------------------------------------------------------


def wat_envelope(
    page_url: str, links: list[dict[str, str]], *, status: str = "200", base: str | None = None
) -> dict[str, Any]:
    """A WAT JSON document as Common Crawl's ia-web-commons writes it for an HTML response."""
    head: dict[str, Any] = {"Title": "A page", "Metas": [{"name": "viewport", "content": "x"}]}
    if base is not None:
        head["Base"] = base
    return {
        "Container": {"Filename": "CC-MAIN-test.warc.gz", "Compressed": True, "Offset": "0"},
        "Envelope": {
            "Format": "WARC",
            "WARC-Header-Length": "500",
            "WARC-Header-Metadata": {
                "WARC-Type": "response",
                "WARC-Target-URI": page_url,
                "WARC-Date": "2024-05-18T01:58:10Z",
                "Content-Type": "application/http; msgtype=response",
            },
            "Payload-Metadata": {
                "Actual-Content-Type": "application/http; msgtype=response",
                "HTTP-Response-Metadata": {
                    "Response-Message": {"Status": status, "Version": "HTTP/1.1", "Reason": "OK"},
                    "Headers": {"Content-Type": "text/html; charset=UTF-8"},
                    "HTML-Metadata": {"Head": head, "Links": links},
                },
            },
        },
    }


def request_envelope(page_url: str) -> dict[str, Any]:
    return {
        "Envelope": {
            "WARC-Header-Metadata": {"WARC-Type": "request", "WARC-Target-URI": page_url},
            "Payload-Metadata": {"HTTP-Request-Metadata": {"Request-Message": {"Method": "GET"}}},
        }
    }


def wat_record(writer: WARCWriter, page_url: str, payload: bytes) -> None:
    record = writer.create_warc_record(
        page_url,
        "metadata",
        payload=io.BytesIO(payload),
        length=len(payload),
        warc_content_type="application/json",
    )
    writer.write_record(record)


def build_wat() -> bytes:
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    writer.write_record(writer.create_warcinfo_record("test.wat.gz", {"format": "WAT"}))
    page = "https://news.example.com/story/1"
    wat_record(writer, page, json.dumps(request_envelope(page)).encode())
    links = [
        {"path": "A@/href", "url": "/story/2", "text": "next story"},
        {
            "path": "IMG@/src",
            "url": "/media/fire.jpg",
            "alt": "Firefighters at work",
            "title": "Fire",
        },
        {"path": "IMG@/src", "url": "/media/fire.jpg", "alt": "Firefighters at work"},
        {"path": "IMG@/src", "url": "data:image/gif;base64,R0lGOD", "alt": "inline"},
        {"path": "IMG@/src", "url": "https://www.facebook.com/tr?id=1", "alt": ""},
        {"path": "IMG@/src", "url": "/media/nocap.jpg"},
        {"path": "IMG@/src", "url": "javascript:void(0)", "alt": "js"},
        {"path": "LINK@/href", "url": "/style.css", "rel": "stylesheet"},
    ]
    wat_record(writer, page, json.dumps(wat_envelope(page, links)).encode())
    gone = "https://news.example.com/gone"
    gone_links = [{"path": "IMG@/src", "url": "/x.jpg", "alt": "x"}]
    wat_record(writer, gone, json.dumps(wat_envelope(gone, gone_links, status="404")).encode())
    wat_record(writer, "https://broken.example/", b'{"Envelope": {"truncated')
    based = "https://blog.example.org/post"
    based_links = [{"path": "IMG@/src", "url": "pics/sun.png", "alt": "Sunrise"}]
    envelope = wat_envelope(based, based_links, base="https://cdn.example.org/b/")
    wat_record(writer, based, json.dumps(envelope).encode())
    return buffer.getvalue()


def test_wat_candidates_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "CC-MAIN-test.warc.wat.gz"
    path.write_bytes(build_wat())
    records = list(iter_wat_candidates(str(path), source="cc-wat"))
    assert len({r.key for r in records}) == len(records)
    assert all(r.source == "cc-wat" for r in records)
    summary = [(r.url, r.caption, r.caption_source, r.reject_reason) for r in records]
    alt, title = CaptionSource.ALT, CaptionSource.TITLE
    assert summary == [
        ("https://news.example.com/media/fire.jpg", "Firefighters at work", alt, None),
        ("https://news.example.com/media/fire.jpg", "Fire", title, None),
        ("data:image/gif;base64,R0lGOD", "inline", alt, RejectReason.DATA_URI),
        ("https://www.facebook.com/tr?id=1", "", alt, RejectReason.TRACKING_PIXEL),
        ("https://news.example.com/media/nocap.jpg", "", alt, RejectReason.NO_CAPTION),
        ("javascript:void(0)", "js", alt, RejectReason.INVALID_URL),
        ("", "", alt, RejectReason.MALFORMED_ROW),
        ("https://cdn.example.org/b/pics/sun.png", "Sunrise", alt, None),
    ]
    assert records[0].page_url == "https://news.example.com/story/1"
    assert records[6].page_url == "https://broken.example/"
    assert "unreadable WAT JSON" in (records[6].reject_detail or "")
    # the same file read again gives the same keys
    assert [r.key for r in iter_wat_candidates(io.BytesIO(path.read_bytes()), "cc-wat")] == [
        r.key for r in records
    ]
