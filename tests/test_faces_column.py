"""`face_boxes` is a typed column (list<list<int32>>: [[x1, y1, x2, y2], ...]) that pyarrow,
DuckDB and Hugging Face `datasets` read as lists of boxes, empty for an image without faces
and null where faces were not looked for; stats.json counts the images with faces and the
boxes, from the job's own counts and from a recount of the folder alike."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from lait.dataset import DatasetFolder, DatasetWriter, FolderCounts, check_stats, compute_stats
from lait.dataset.stats import StatsMismatchError
from lait.record import Record, RejectReason, face_boxes_of

BOXES: dict[int, tuple[tuple[int, int, int, int], ...] | None] = {
    0: ((10, 20, 60, 80), (100, 20, 150, 90)),  # two faces
    1: ((5, 5, 45, 50),),
    2: (),  # looked at, no face
    3: (),
    4: None,  # not looked at (blur_faces off for this record)
}


@pytest.fixture
def folder(
    tmp_path: Path,
    make_accepted: Callable[[int], Record],
    make_rejected: Callable[[int, RejectReason], Record],
) -> Path:
    path = tmp_path / "faces"
    with DatasetWriter(path, samples_per_shard=3) as writer:
        for i, boxes in BOXES.items():
            writer.write(dataclasses.replace(make_accepted(i), face_boxes=boxes))
        writer.write(make_rejected(0, RejectReason.TOO_SMALL))
    return path


def _expected_by_key(make_accepted: Callable[[int], Record]) -> dict[str, list[list[int]] | None]:
    return {
        make_accepted(i).key: None if boxes is None else [list(box) for box in boxes]
        for i, boxes in BOXES.items()
    }


def test_pyarrow_reads_a_list_of_int32_boxes(
    folder: Path, make_accepted: Callable[[int], Record]
) -> None:
    table = pa.concat_tables(pq.read_table(p) for p in sorted(folder.glob("*.parquet")))
    assert table.schema.field("face_boxes").type == pa.list_(pa.list_(pa.int32()))
    read = dict(zip(table["key"].to_pylist(), table["face_boxes"].to_pylist(), strict=True))
    assert read == _expected_by_key(make_accepted)
    # Our own reader gives records back with the boxes as tuples, equal to what was written.
    for sample in DatasetFolder(folder).iter_samples():
        assert sample.record().face_boxes == face_boxes_of(read[sample.key])


def test_duckdb_reads_the_boxes_as_lists(
    folder: Path, make_accepted: Callable[[int], Record]
) -> None:
    import duckdb

    rows = duckdb.sql(
        f"SELECT key, len(face_boxes), face_boxes[1][3] - face_boxes[1][1] "
        f"FROM read_parquet('{folder}/*.parquet')"
    ).fetchall()
    expected = _expected_by_key(make_accepted)
    for key, count, first_width in rows:
        boxes = expected[key]
        assert count == (None if boxes is None else len(boxes))
        assert first_width == (boxes[0][2] - boxes[0][0] if boxes else None)
    (total,) = duckdb.sql(
        f"SELECT sum(len(face_boxes)) FROM read_parquet('{folder}/*.parquet')"
    ).fetchone()  # type: ignore[misc]
    assert total == 3


def test_datasets_loads_the_typed_boxes_through_the_card(
    folder: Path, tmp_path: Path, make_accepted: Callable[[int], Record]
) -> None:
    import datasets

    loaded = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "hf"))
    assert isinstance(loaded, datasets.Dataset)
    feature = loaded.features["json"]["face_boxes"]
    assert feature == datasets.List(datasets.List(datasets.Value("int32")))
    read = {row["__key__"]: row["json"]["face_boxes"] for row in loaded}
    assert read == _expected_by_key(make_accepted)


def test_stats_count_images_with_faces_and_boxes(folder: Path) -> None:
    stats = json.loads((folder / "stats.json").read_text())
    check_stats(stats)
    assert stats["faces"] == {"images_checked": 4, "images_with_faces": 2, "boxes": 3}
    assert compute_stats(str(folder))["faces"] == stats["faces"]  # `lait info`'s recount
    with pytest.raises(StatsMismatchError, match="face counts"):
        check_stats({**stats, "faces": {"images_checked": 4, "images_with_faces": 5, "boxes": 5}})


def test_boxes_written_as_json_text_before_the_column_was_typed_still_count() -> None:
    old = ["[[1, 2, 3, 4], [5, 6, 7, 8]]", "[]", None]
    counts = FolderCounts.of_rows("accepted", ["s"] * 3, [None] * 3, [None] * 3, face_boxes=old)
    assert (counts.faces_checked, counts.images_with_faces, counts.face_boxes) == (2, 1, 2)
    assert face_boxes_of(old[0]) == ((1, 2, 3, 4), (5, 6, 7, 8))


def test_a_fetch_outcome_carries_the_boxes_to_every_record_of_its_url(
    make_accepted: Callable[[int], Record],
) -> None:
    """One fetch per URL: its outcome (also as the JSON line a resumed job reads back) puts
    the boxes on each caption's record."""
    from pipeline.download import FetchedImage

    boxes = ((10, 20, 60, 80), (100, 20, 150, 90))
    fetched = FetchedImage(url="http://h/a.jpg", fields=(("face_boxes", boxes),))
    again = FetchedImage.from_json(fetched.to_json())
    record = dataclasses.replace(make_accepted(0), face_boxes=None)
    assert fetched.apply(record).face_boxes == again.apply(record).face_boxes == boxes
    none_looked = FetchedImage.from_json(
        FetchedImage(url="u", fields=(("face_boxes", ()),)).to_json()
    )
    assert none_looked.apply(record).face_boxes == ()
