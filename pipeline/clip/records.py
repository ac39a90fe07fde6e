"""What the CLIP stage's transforms and its model step share about records: which ones are
scored, which image a record shows, where its pixels are, and the content heads' fields.

Kept apart from the model step (`pipeline.clip.scorer`, which needs torch) so that building
a graph, or running one without CLIP, never imports torch or open_clip.
"""

from __future__ import annotations

from lait.record import Record, RejectReason, Status

EMBEDDINGS_TAG = "embeddings"

# Per signal: the record field its probability goes to and the reason it rejects with.
CONTENT_FIELDS: dict[str, str] = {
    "nonnatural": "p_nonnatural",
    "unsafe": "p_unsafe",
    "watermark": "p_watermark",
}
CONTENT_REASONS: dict[str, RejectReason] = {
    "nonnatural": RejectReason.NONNATURAL_IMAGE,
    "unsafe": RejectReason.UNSAFE_IMAGE,
    "watermark": RejectReason.WATERMARKED_IMAGE,
}


def has_pixels(record: Record) -> bool:
    """The record carries its image bytes or a reference to where they were staged."""
    return record.image is not None or record.image_ref is not None


def scorable(record: Record) -> bool:
    """A live candidate whose pixels were downloaded: what the CLIP stage scores."""
    return record.status is Status.CANDIDATE and has_pixels(record)


def image_identity(record: Record) -> str:
    """What makes two records "the same image" within a batch: the staged reference, else
    the bytes' hash, else (not yet hashed) the record itself."""
    return record.image_ref or record.sha256 or record.key


def image_bytes(record: Record) -> bytes:
    """The record's image bytes: carried, or read back from where the download staged them."""
    if record.image is not None:
        return record.image
    if record.image_ref is None:
        raise ValueError(f"record {record.key} has no image bytes and no image_ref")
    # Imported here: staging is the download stage's module, and records that carry their
    # bytes never need it.
    from pipeline.staging import read_staged

    return read_staged(record.image_ref)
