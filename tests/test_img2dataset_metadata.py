"""img2dataset-compatible metadata beside LAIT's: `error_message`, `exif`, `img2dataset_status`
in every parquet row and KEY.json, and img2dataset's `NNNNN_stats.json` beside every shard."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from img2dataset import logger as img2dataset_logger
from PIL import Image

from lait.cli import main as lait_main
from lait.dataset import DatasetFolder, DatasetWriter, layout
from lait.dataset.writer import prepare_folder
from lait.record import (
    CaptionSource,
    Record,
    RejectReason,
    Stage,
    Status,
    img2dataset_status_of,
)
from pipeline.config import ImageConfig
from pipeline.image import ImageProcessor

Make = Callable[[int], Record]
MakeRejected = Callable[[int, RejectReason], Record]

# One reject per stage, and the img2dataset status it must get.
REJECTS = [
    (RejectReason.NO_CAPTION, "failed_to_download"),
    (RejectReason.CAPTION_TOO_SHORT, "failed_to_download"),
    (RejectReason.WRONG_LANGUAGE, "failed_to_download"),
    (RejectReason.HTTP_NOT_FOUND, "failed_to_download"),
    (RejectReason.TIMEOUT, "failed_to_download"),
    (RejectReason.TRUNCATED_IMAGE, "failed_to_resize"),
    (RejectReason.TOO_SMALL, "failed_to_resize"),
    (RejectReason.LOW_CLIP_SCORE, "failed_to_resize"),
    (RejectReason.DUPLICATE_EXACT, "failed_to_resize"),
]
CAMERA = {0x010F: "Canon", 0x0110: "Canon EOS 5D", 0x0132: "2024:05:06 07:08:09"}


def _jpeg_with_exif(size: tuple[int, int] = (640, 480)) -> bytes:
    exif = Image.Exif()
    for tag, value in CAMERA.items():
        exif[tag] = value
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 90)).save(buffer, format="JPEG", exif=exif, quality=90)
    return buffer.getvalue()


def _downloaded(data: bytes, name: str) -> Record:
    candidate = Record.candidate(
        source="test",
        url=f"http://127.0.0.1/img/{name}.jpg",
        caption=f"a photo called {name}",
        caption_source=CaptionSource.ALT,
    )
    return dataclasses.replace(candidate, image=data)


@pytest.fixture(scope="module")
def processor() -> ImageProcessor:
    return ImageProcessor(ImageConfig(image_size=256))


@pytest.fixture
def folder(
    tmp_path: Path, processor: ImageProcessor, make_accepted: Make, make_rejected: MakeRejected
) -> Path:
    """Five accepted samples (one a real camera JPEG) in shards of 2, and one reject a stage."""
    camera = processor.process(_downloaded(_jpeg_with_exif(), "camera")).accepted()
    out = tmp_path / "dataset"
    with DatasetWriter(out, samples_per_shard=2) as writer:
        writer.write_all([camera, *(make_accepted(i) for i in range(4))])
        writer.write_all(make_rejected(i, reason) for i, (reason, _) in enumerate(REJECTS))
    return out


def _shard_table(folder: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(folder.glob("0*.parquet")))


def test_exif_is_read_from_the_original_bytes_as_img2dataset_stores_it(
    processor: ImageProcessor,
) -> None:
    out = processor.process(_downloaded(_jpeg_with_exif(), "camera"))
    assert out.status is Status.CANDIDATE and out.exif is not None
    # img2dataset's form: exifread's tag names to stripped strings, as one JSON object.
    assert json.loads(out.exif) == {
        "Image Make": "Canon",
        "Image Model": "Canon EOS 5D",
        "Image DateTime": "2024:05:06 07:08:09",
    }
    # The resized image has no EXIF left: the tags could only come from the download.
    assert not Image.open(io.BytesIO(out.image or b"")).getexif()

    png = io.BytesIO()
    Image.new("RGB", (400, 300), (1, 2, 3)).save(png, format="PNG")
    assert processor.process(_downloaded(png.getvalue(), "png")).exif == "{}"


def test_shard_parquet_has_img2dataset_columns_typed_and_valued(folder: Path) -> None:
    table = _shard_table(folder)
    for column in ("error_message", "exif", "img2dataset_status"):
        assert table.schema.field(column).type == pa.string(), column
    rows = table.to_pylist()
    assert len(rows) == 5
    assert {r["img2dataset_status"] for r in rows} == {"success"}
    assert {r["status"] for r in rows} == {"accepted"}  # LAIT's own column keeps its values
    assert all(r["error_message"] is None for r in rows)
    exifs = {r["url"].rsplit("/", 1)[-1]: r["exif"] for r in rows}
    assert json.loads(exifs["camera.jpg"])["Image Make"] == "Canon"
    assert exifs["0.jpg"] is None  # written without the decode stage: unknown, not "{}"

    # KEY.json in the tars carries the same columns, as img2dataset's KEY.json does.
    metadata = []
    for tar_path in sorted(folder.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    metadata.append(json.loads(tar.extractfile(member).read()))  # type: ignore[union-attr]
    assert len(metadata) == 5
    assert {m["img2dataset_status"] for m in metadata} == {"success"}
    assert all("error_message" in m and "exif" in m for m in metadata)


def test_ledger_rows_carry_error_message_and_status_by_stage(folder: Path) -> None:
    rejects = DatasetFolder(folder).rejects().to_pylist()
    by_reason = {r["reject_reason"]: r for r in rejects}
    assert len(by_reason) == len(REJECTS)
    for i, (reason, status) in enumerate(REJECTS):
        row = by_reason[reason.value]
        assert row["status"] == "rejected"
        assert row["img2dataset_status"] == status, reason
        assert row["error_message"] == f"{reason.value}: because {i}"


def test_status_mapping_covers_every_stage() -> None:
    downloaded_before = {Stage.DECODE, Stage.IMAGE_FILTER, Stage.CLIP, Stage.DEDUPE}
    for stage in Stage:
        expected = "failed_to_resize" if stage in downloaded_before else "failed_to_download"
        assert img2dataset_status_of(Status.REJECTED, stage) == expected, stage
    assert img2dataset_status_of(Status.ACCEPTED, None) == "success"
    assert img2dataset_status_of(Status.CANDIDATE, None) is None
    for reason in RejectReason:  # every reason, through the record
        record = Record.candidate(
            source="s", url="u", caption="c", caption_source=CaptionSource.LIST
        ).rejected(reason)
        assert record.img2dataset_status == img2dataset_status_of(Status.REJECTED, reason.stage)
        assert record.error_message == reason.value


def test_per_shard_stats_add_up_to_the_shard_rows(folder: Path, tmp_path: Path) -> None:
    sizes = DatasetFolder(folder).sizes()
    shard_ids = DatasetFolder(folder).shard_ids()
    assert shard_ids == [0, 1, 2]

    # The keys img2dataset's own writer puts in a stats file.
    theirs = tmp_path / "img2dataset"
    theirs.mkdir()
    counter = img2dataset_logger.CappedCounter()
    img2dataset_logger.write_stats(str(theirs), 0, 1, 1, 0, 0, 0.0, 1.0, counter, 5)
    their_keys = set(json.loads((theirs / "00000_stats.json").read_text()))

    for shard_id in shard_ids:
        stats = json.loads((folder / layout.shard_stats_name(shard_id)).read_text())
        assert set(stats) == their_keys
        rows = pq.read_metadata(folder / layout.shard_parquet_name(shard_id)).num_rows
        assert stats["count"] == rows == sizes[layout.shard_tar_name(shard_id)]
        assert stats["successes"] + stats["failed_to_download"] + stats["failed_to_resize"] == rows
        assert (stats["successes"], stats["failed_to_download"], stats["failed_to_resize"]) == (
            rows,
            0,
            0,
        )
        assert stats["status_dict"] == {"success": rows}
        assert img2dataset_logger.CappedCounter.load(stats["status_dict"]).most_common(1)
        assert stats["end_time"] >= stats["start_time"]
        assert stats["duration"] == pytest.approx(stats["end_time"] - stats["start_time"])
    assert sum(json.loads(p.read_text())["count"] for p in folder.glob("*_stats.json")) == sum(
        sizes.values()
    )


def test_img2dataset_style_reader_filters_successes(folder: Path) -> None:
    """What img2dataset users do with its output: concatenate the parquet files with pandas
    and keep `status == "success"` (here the img2dataset-compatible column)."""
    parquets = sorted(folder.glob("*.parquet")) + sorted((folder / "rejects").glob("*.parquet"))
    df = pd.concat([pd.read_parquet(p) for p in parquets], ignore_index=True)
    ok = df[df["img2dataset_status"] == "success"]
    assert sorted(ok["key"]) == sorted(DatasetFolder(folder).metadata().column("key").to_pylist())
    assert ok["error_message"].isna().all()
    failed = df[df["img2dataset_status"] != "success"]
    assert failed["error_message"].notna().all() and len(failed) == len(REJECTS)
    assert failed["img2dataset_status"].value_counts().to_dict() == {
        "failed_to_download": 5,
        "failed_to_resize": 4,
    }
    # img2dataset's per-shard counts read the way its logger reads them (all *_stats.json).
    stats = [json.loads(p.read_text()) for p in sorted(folder.glob("*_stats.json"))]
    assert sum(s["successes"] for s in stats) == len(ok)


def test_card_and_info_ignore_the_stats_files_and_overwrite_removes_them(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = (folder / layout.CARD_FILE).read_text()
    assert "_stats.json" not in card.split("---")[1]  # data_files name the tars only
    assert lait_main(["info", str(folder)]) == 0
    assert "5" in capsys.readouterr().out

    assert layout.is_dataset_file("00000_stats.json")
    assert not layout.is_dataset_file("notes_stats.json")
    (folder / "notes.json").write_text("{}")
    prepare_folder(str(folder), overwrite=True)
    assert not list(folder.glob("*_stats.json")) and not list(folder.glob("*.parquet"))
    assert (folder / "notes.json").exists()
