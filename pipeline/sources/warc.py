"""Read web archives: HTML pages from WARC files, image candidates from Common Crawl WAT files.

Both accept a path (local or anything fsspec opens, e.g. gs://) or an open binary stream;
warcio detects and decompresses per-record gzip (`.warc.gz`, `.wat.gz`) itself.

WAT records are JSON produced by ia-web-commons (Common Crawl's WAT). For an HTML response
the image links sit in
`Envelope.Payload-Metadata.HTTP-Response-Metadata.HTML-Metadata.Links`, each like
`{"path": "IMG@/src", "url": "/a.jpg", "alt": "...", "title": "..."}` with the URL as it
is written in the page, so it is resolved against `Head.Base` or the page URL here.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from typing import Any, NamedTuple

from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed

from lait.record import CaptionSource, Record, RejectReason, record_key
from lait.urls import InvalidUrlError, resolve_http_url
from pipeline.extract.candidates import ImageSighting, records_for_page
from pipeline.extract.charset import normalise_charset
from pipeline.extract.page_policy import PagePolicy, apply_page_policy
from pipeline.sources.streams import SourceInput, open_source, source_name

HTML_CONTENT_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# The image attributes a WAT link path may name (`IMG@/src`; lazy-load variants if present).
_WAT_IMAGE_ATTRIBUTES = frozenset({"src", "data-src", "data-lazy-src", "data-original"})


class WarcReadError(ValueError):
    """A WARC/WAT file that warcio cannot read past (not an archive, or corrupt)."""


class WarcPage(NamedTuple):
    """One archived HTML page: its URL, its body, and the codec its HTTP headers declare."""

    page_url: str
    html: bytes
    charset: str | None


def _archive_records(stream: Any, origin: str) -> Iterator[Any]:
    try:
        yield from ArchiveIterator(stream)
    # warcio raises AttributeError on a record cut off inside its headers, zlib/EOF errors
    # on a broken gzip member.
    except (ArchiveLoadFailed, AttributeError, EOFError, zlib.error) as error:
        raise WarcReadError(
            f"cannot read {origin or 'archive'} as WARC ({type(error).__name__}: {error}). "
            "Is it a complete (gzipped) WARC/WAT file?"
        ) from error


def _content_type(value: str | None) -> tuple[str, str | None]:
    """(media type, codec of its charset parameter) of a Content-Type header value."""
    if not value:
        return "", None
    media_type = value.split(";", 1)[0].strip().lower()
    charset = normalise_charset(value) if "charset" in value.lower() else None
    return media_type, charset


def iter_warc_pages(src: SourceInput, *, max_bytes: int | None = None) -> Iterator[WarcPage]:
    """The HTML pages of a WARC: `response` records with HTTP status 200 and an HTML type.

    The body is de-chunked and content-decoded. With `max_bytes`, at most that many bytes of
    each body are read (a truncated page still parses). Raises WarcReadError if the file is
    not a readable archive.
    """
    origin = source_name(src)
    with open_source(src, decompress=False) as stream:
        for record in _archive_records(stream, origin):
            if record.rec_type != "response" or record.http_headers is None:
                continue
            if record.http_headers.get_statuscode() != "200":
                continue
            media_type, charset = _content_type(record.http_headers.get_header("Content-Type"))
            if media_type not in HTML_CONTENT_TYPES:
                continue
            page_url = record.rec_headers.get_header("WARC-Target-URI") or ""
            content = record.content_stream()
            body = content.read() if max_bytes is None else content.read(max_bytes)
            yield WarcPage(page_url, body, charset)


def _dig(obj: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(name)
    return obj


def _wat_base_url(page_url: str, head: Any) -> str:
    base = _dig(head, "Base")
    if isinstance(base, str) and base.strip():
        try:
            return resolve_http_url(base, page_url)
        except InvalidUrlError:
            pass  # an unusable <base> is ignored, as browsers do
    return page_url


def _wat_sightings(links: Any) -> list[ImageSighting]:
    sightings = []
    for link in links if isinstance(links, list) else []:
        if not isinstance(link, dict):
            continue
        path = str(link.get("path", ""))
        element, _, attribute = path.partition("@/")
        if element.upper() != "IMG" or attribute.lower() not in _WAT_IMAGE_ATTRIBUTES:
            continue
        url, alt, title = link.get("url"), link.get("alt"), link.get("title")
        sightings.append(
            ImageSighting(
                raw_url=url if isinstance(url, str) else None,
                alt=alt if isinstance(alt, str) else "",
                title=title if isinstance(title, str) else "",
            )
        )
    return sightings


def _malformed_wat(record: Any, source: str, page_url: str, problem: str) -> Record:
    record_id = record.rec_headers.get_header("WARC-Record-ID") or ""
    candidate = Record.candidate(
        source=source,
        url="",
        caption="",
        caption_source=CaptionSource.ALT,
        page_url=page_url,
        key=record_key(f"wat:{record_id}", page_url),
    )
    return candidate.rejected(RejectReason.MALFORMED_ROW, f"WAT record {record_id}: {problem}")


def _wat_metas(head: Any) -> list[tuple[str, str]]:
    """The page's `<meta name content>` pairs as a WAT's `Head.Metas` lists them."""
    metas = head.get("Metas") if isinstance(head, dict) else None
    if not isinstance(metas, list):
        return []
    return [
        (str(meta["name"]).strip().lower(), str(meta.get("content", "")))
        for meta in metas
        if isinstance(meta, dict) and meta.get("name")
    ]


def iter_wat_candidates(
    src: SourceInput, source: str, policy: PagePolicy | None = None
) -> Iterator[Record]:
    """Image candidates of the HTML pages described in a Common Crawl WAT file.

    Only metadata records of `response`s with HTTP status 200 that carry HTML metadata
    count. Each `IMG@/src` link becomes records with the rules of the HTML extractor
    (alt → ALT, title → TITLE; data URIs, pixels, icons, no caption and bad URLs rejected;
    keys unique per page). WAT has no surrounding text and no declared sizes, so those
    rules apply by URL only. A metadata record whose JSON cannot be read becomes one
    MALFORMED_ROW reject. Raises WarcReadError if the file is not a readable archive.
    `policy` (the per-page cap and meta robots opt-out, from the page's `Head.Metas`)
    applies to each page's records when given.
    """
    origin = source_name(src)
    with open_source(src, decompress=False) as stream:
        for record in _archive_records(stream, origin):
            if record.rec_type != "metadata":
                continue
            page_url = record.rec_headers.get_header("WARC-Target-URI") or ""
            media_type, _ = _content_type(record.rec_headers.get_header("Content-Type"))
            if media_type != "application/json":
                continue
            try:
                envelope = json.loads(record.content_stream().read())["Envelope"]
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
                yield _malformed_wat(record, source, page_url, f"unreadable WAT JSON ({error})")
                continue
            if _dig(envelope, "WARC-Header-Metadata", "WARC-Type") != "response":
                continue
            response = _dig(envelope, "Payload-Metadata", "HTTP-Response-Metadata")
            if str(_dig(response, "Response-Message", "Status")) != "200":
                continue
            html = _dig(response, "HTML-Metadata")
            if not isinstance(html, dict):
                continue
            target = _dig(envelope, "WARC-Header-Metadata", "WARC-Target-URI")
            page_url = target if isinstance(target, str) and target else page_url
            record_id = record.rec_headers.get_header("WARC-Record-ID") or ""
            records = records_for_page(
                _wat_sightings(html.get("Links")),
                page_url=page_url,
                base_url=_wat_base_url(page_url, html.get("Head")),
                source=source,
                where=f"{origin}#{record_id}",
            )
            if policy is not None:
                records = apply_page_policy(records, _wat_metas(html.get("Head")), policy).records
            yield from records
