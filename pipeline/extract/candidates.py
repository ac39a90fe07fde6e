"""Turn the images found on one page into records: candidates, or rejects with a reason.

Shared by the HTML extractor and the WAT reader, so both apply the same rules. Every
(image URL, caption) pair a page offers becomes exactly one record; an image with no
caption at all becomes one record with the caption "". Identical pairs on one page are
kept once (a usable candidate wins over a rejected twin), so keys are unique per page.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from lait.record import CaptionSource, Record, RejectReason, Status, record_key
from lait.urls import InvalidUrlError, clean_url_text, is_data_uri, resolve_http_url
from pipeline.extract.image_screening import screen_image

# How much of a `data:` URI or an invalid URL the ledger keeps (the key hashes all of it).
MAX_LEDGER_URL_CHARS = 256


@dataclasses.dataclass(frozen=True, slots=True)
class ImageSighting:
    """One image as a page shows it: the URL text chosen for it and the texts about it.

    `raw_url` is unresolved (relative URLs are resolved against the page's base later);
    None when the element offers no URL at all.
    """

    raw_url: str | None
    alt: str = ""
    title: str = ""
    surrounding: str = ""
    width: int | None = None
    height: int | None = None
    css_class: str = ""


def normalise_caption(text: str) -> str:
    """Caption text with whitespace runs collapsed to single spaces and ends trimmed."""
    return " ".join(text.split())


def _captions(sighting: ImageSighting) -> list[tuple[CaptionSource, str]]:
    captions: list[tuple[CaptionSource, str]] = []
    for source, text in (
        (CaptionSource.ALT, sighting.alt),
        (CaptionSource.TITLE, sighting.title),
        (CaptionSource.SURROUNDING, sighting.surrounding),
    ):
        caption = normalise_caption(text)
        if caption and all(caption != seen for _, seen in captions):
            captions.append((source, caption))
    return captions


def _shorten(text: str) -> str:
    if len(text) <= MAX_LEDGER_URL_CHARS:
        return text
    return text[: MAX_LEDGER_URL_CHARS - 1] + "…"


def _resolve(
    sighting: ImageSighting, base_url: str
) -> tuple[str, str, tuple[RejectReason, str] | None]:
    """(URL for the record, the full URL its key hashes, rejection or None)."""
    raw = sighting.raw_url
    if raw is None or not raw.strip():
        return "", "", (RejectReason.INVALID_URL, "image element has no URL")
    if is_data_uri(raw):
        full = raw.strip()
        return _shorten(full), full, (RejectReason.DATA_URI, f"inline data URI, {len(full)} chars")
    try:
        url = resolve_http_url(raw, base_url)
    except InvalidUrlError as error:
        text = clean_url_text(raw)
        return _shorten(text), text, (RejectReason.INVALID_URL, str(error))
    rejection = screen_image(
        url, width=sighting.width, height=sighting.height, css_class=sighting.css_class
    )
    return url, url, rejection


def records_for_sighting(
    sighting: ImageSighting,
    *,
    page_url: str,
    base_url: str,
    source: str,
    where: str | None = None,
) -> list[Record]:
    """The records for one image: one per distinct caption, or one with caption "".

    `where` names the page as the job saw it (see `Record.candidate`; default `page_url`).
    """
    url, key_url, rejection = _resolve(sighting, base_url)
    captions = _captions(sighting)
    if not captions:
        captions = [(CaptionSource.ALT, "")]
        if rejection is None:
            rejection = (RejectReason.NO_CAPTION, "no alt, title or nearby text")
    records = []
    for caption_source, caption in captions:
        record = Record.candidate(
            source=source,
            url=url,
            caption=caption,
            caption_source=caption_source,
            page_url=page_url,
            where=where,
            key=record_key(key_url, caption),
        )
        if rejection is not None:
            record = record.rejected(*rejection)
        records.append(record)
    return records


def records_for_page(
    sightings: Iterable[ImageSighting],
    *,
    page_url: str,
    base_url: str,
    source: str,
    where: str | None = None,
) -> list[Record]:
    """The records for all images of one page, each key once, in page order."""
    by_key: dict[str, Record] = {}
    for sighting in sightings:
        for record in records_for_sighting(
            sighting, page_url=page_url, base_url=base_url, source=source, where=where
        ):
            kept = by_key.get(record.key)
            if kept is None or (
                kept.status is Status.REJECTED and record.status is Status.CANDIDATE
            ):
                by_key[record.key] = record
    return list(by_key.values())
