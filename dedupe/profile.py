"""The compact view of a record that dedupe shuffles: key, hashes and what the keep policy needs.

Image bytes never travel through the dedupe shuffles. The colour thumbnails (3 x 192 bytes)
travel only where they are compared (the perceptual stage's buckets); the exact stages move
`thin` profiles, which keep a 16-byte digest of the quantised thumbnail (`colour_key`) for
collapsing identical pictures.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from dedupe.fingerprint import THUMBNAIL_BYTES, colour_thumbnail, phash_int
from lait.record import Record

Rank = tuple[bool, float, int, str]
"""Sorts best first: has a CLIP score, higher score, more pixels, then smaller key."""


def rank_of(clip_score: float | None, pixels: int, key: str) -> Rank:
    """The keep-policy order: the smallest rank survives its cluster."""
    return (clip_score is None, -(clip_score or 0.0), -pixels, key)


def record_pixels(record: Record) -> int:
    """Original resolution (what was fetched), else the stored size, else 0."""
    width = record.original_width or record.width or 0
    height = record.original_height or record.height or 0
    return width * height


def record_order(record: Record) -> tuple[Rank, str, str, str]:
    """Keep order among records, ties (same key) broken by page, source and bytes."""
    return (
        rank_of(record.clip_score, record_pixels(record), record.key),
        record.page_url or "",
        record.source,
        record.sha256 or "",
    )


@dataclasses.dataclass(frozen=True)
class Profile:
    """What the dedupe stages need to know about one live record."""

    key: str
    url: str = ""
    caption: str = ""
    sha256: str | None = None
    phash: int | None = None
    thumbnail: bytes | None = None
    clip_score: float | None = None
    pixels: int = 0
    tiebreak: tuple[str, str, str] = ("", "", "")
    # how many profiles this one stands for once an exact stage collapsed its copies onto it
    copies: int = 1
    # a digest of the quantised uncropped thumbnail, kept when the thumbnail is not (`thin`)
    colour_key: bytes | None = None

    @property
    def rank(self) -> Rank:
        """This profile's place in the keep policy."""
        return rank_of(self.clip_score, self.pixels, self.key)

    @property
    def order(self) -> tuple[Rank, str, str, str]:
        """Like `record_order` of the record it came from."""
        return (self.rank, *self.tiebreak)


def profile_of(record: Record) -> Profile:
    """The profile of a live record (decodes its image once, for the colour thumbnail)."""
    return Profile(
        key=record.key,
        url=record.url,
        caption=record.caption,
        sha256=record.sha256,
        phash=phash_int(record.phash) if record.phash else None,
        thumbnail=record.colour_thumbnail
        or (colour_thumbnail(record.image) if record.image else None),
        clip_score=record.clip_score,
        pixels=record_pixels(record),
        tiebreak=(record.page_url or "", record.source, record.sha256 or ""),
    )


def colour_key_of(thumbnail: bytes | None, colour_threshold: float | None) -> bytes | None:
    """A 16-byte digest of the uncropped thumbnail quantised in steps of
    floor(colour_threshold) + 1: two thumbnails with one key differ by at most
    floor(colour_threshold) on every byte (see `dedupe.perceptual.perceptual_identity`).
    None without a thumbnail or a colour check."""
    if thumbnail is None or colour_threshold is None:
        return None
    step = int(colour_threshold) + 1
    quantised = np.frombuffer(thumbnail[:THUMBNAIL_BYTES], dtype=np.uint8) // step
    return hashlib.blake2b(quantised.astype(np.uint8).tobytes(), digest_size=16).digest()


def thin(profile: Profile, colour_threshold: float | None) -> Profile:
    """The profile without its thumbnail, its `colour_key` set in its place."""
    if profile.thumbnail is None:
        return profile
    key = colour_key_of(profile.thumbnail, colour_threshold)
    return dataclasses.replace(profile, thumbnail=None, colour_key=key)


def best_profile(a: Profile, b: Profile) -> Profile:
    """The one of two profiles the keep policy prefers."""
    return a if a.order <= b.order else b
