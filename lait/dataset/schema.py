"""The Arrow schema of the metadata columns: every record field but the image bytes, then the
columns derived from them for img2dataset's readers (`lait.record.DERIVED_COLUMNS`)."""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from lait.record import METADATA_COLUMNS, Record

_FIELD_TYPES: dict[str, pa.DataType] = {
    "key": pa.string(),
    "source": pa.string(),
    "url": pa.string(),
    "caption": pa.string(),
    "caption_source": pa.string(),
    "page_url": pa.string(),
    "sighting_id": pa.string(),
    "image_format": pa.string(),
    "width": pa.int32(),
    "height": pa.int32(),
    "original_width": pa.int32(),
    "original_height": pa.int32(),
    "num_bytes": pa.int64(),
    "sha256": pa.string(),
    "phash": pa.string(),
    "language": pa.string(),
    "language_score": pa.float32(),
    "clip_score": pa.float32(),
    "p_nonnatural": pa.float32(),
    "p_unsafe": pa.float32(),
    "p_watermark": pa.float32(),
    "face_boxes": pa.list_(pa.list_(pa.int32())),  # [[x1, y1, x2, y2], ...]
    "status": pa.string(),
    "reject_stage": pa.string(),
    "reject_reason": pa.string(),
    "reject_detail": pa.string(),
    "reject_value": pa.float64(),
    "reject_limit": pa.float64(),
    "duplicate_of": pa.string(),
    "exif": pa.string(),
    "error_message": pa.string(),
    "img2dataset_status": pa.string(),
}

if set(_FIELD_TYPES) != set(METADATA_COLUMNS):  # pragma: no cover - guards schema drift
    raise RuntimeError(
        "lait.dataset.schema is out of step with lait.record.Record: "
        f"{sorted(set(_FIELD_TYPES) ^ set(METADATA_COLUMNS))}"
    )

METADATA_SCHEMA = pa.schema([pa.field(name, _FIELD_TYPES[name]) for name in METADATA_COLUMNS])


def metadata_table(records: Iterable[Record]) -> pa.Table:
    """The records' metadata as an Arrow table with the fixed schema (even when empty)."""
    rows = [record.metadata() for record in records]
    return pa.Table.from_pylist(rows, schema=METADATA_SCHEMA)
