"""Hugging Face `datasets` (the real library, offline) loads a LAIT folder through its card."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets

from lait.dataset import DatasetFolder, DatasetWriter
from lait.record import Record, RejectReason


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def list_source_folder(
    tmp_path: Path,
    make_accepted: Callable[..., Record],
    make_rejected: Callable[[int, RejectReason], Record],
) -> Path:
    """A cc_sbu folder (url+caption list source): its first 8 samples have no page_url."""
    folder = tmp_path / "cc_sbu"
    with DatasetWriter(folder, samples_per_shard=4) as writer:
        for i in range(10):
            record = make_accepted(i, source="cc_sbu")
            writer.write(replace(record, page_url=None) if i < 8 else record)
        for i in range(3):
            writer.write(make_rejected(i, RejectReason.TOO_SMALL))
    return folder


def _load(path: Path | str, tmp_path: Path, **kwargs: object) -> datasets.Dataset:
    loaded = datasets.load_dataset(
        str(path), split="train", cache_dir=str(tmp_path / "hf-cache"), **kwargs
    )
    assert isinstance(loaded, datasets.Dataset)
    return loaded


def test_folder_loads_as_its_samples_with_images_and_typed_metadata(
    list_source_folder: Path, tmp_path: Path
) -> None:
    loaded = _load(list_source_folder, tmp_path)

    folder = DatasetFolder(list_source_folder)
    assert loaded.num_rows == len(folder) == 10  # the accepted samples only, no ledger rows
    assert isinstance(loaded.features["jpg"], datasets.Image)
    assert loaded.features["json"]["page_url"] == datasets.Value("string")
    assert loaded.features["json"]["width"] == datasets.Value("int32")
    by_key = {sample.key: sample for sample in folder.iter_samples()}
    assert sorted(loaded["__key__"]) == sorted(by_key)
    page_urls = {row["__key__"]: row["json"]["page_url"] for row in loaded}
    assert sorted(page_urls.values(), key=str) == [None] * 8 + ["http://127.0.0.1/index.html"] * 2
    row = loaded[0]
    assert row["jpg"].size == (320, 320)
    assert row["txt"] == by_key[row["__key__"]].caption == row["json"]["caption"]
    assert row["json"]["status"] == "accepted"


def test_shards_load_in_any_order(list_source_folder: Path, tmp_path: Path) -> None:
    shards = [str(p) for p in sorted(list_source_folder.glob("*.tar"), reverse=True)]
    loaded = _load(list_source_folder, tmp_path, data_files=shards)
    assert loaded.num_rows == 10
    assert loaded.features["json"]["page_url"] == datasets.Value("string")
    assert loaded[0]["__url__"].endswith("00002.tar")


def test_rejects_ledger_loads_on_its_own(list_source_folder: Path, tmp_path: Path) -> None:
    ledger = _load(list_source_folder / "rejects", tmp_path)
    assert ledger.num_rows == DatasetFolder(list_source_folder).stats()["rejected"] == 3
    assert set(ledger["reject_reason"]) == {"too_small"}
    assert ledger.features["reject_value"] == datasets.Value("float64")


def test_without_the_card_the_folder_loads_wrong(list_source_folder: Path, tmp_path: Path) -> None:
    """What the card fixes: with it removed, `datasets` guesses, and guesses wrong."""
    (list_source_folder / "README.md").unlink()
    shards = sorted(str(p) for p in list_source_folder.glob("*.tar"))
    with pytest.raises(datasets.exceptions.DatasetGenerationError):
        _load("webdataset", tmp_path, data_files=shards)  # page_url typed null from 5 samples
    # The json builder: the shards' NNNNN_stats.json (with stats.json and sizes.json) outnumber
    # the parquet files, and no two of them share a schema.
    with pytest.raises(datasets.exceptions.DatasetGenerationError):
        _load(list_source_folder, tmp_path)


def test_card_names_every_image_format_in_the_folder(
    tmp_path: Path, make_accepted: Callable[..., Record]
) -> None:
    png = _png(64, 48)
    with DatasetWriter(tmp_path / "ds", samples_per_shard=3) as writer:
        for i in range(6):
            record = make_accepted(i)
            if i % 2:
                record = replace(record, image=png, image_format="png", width=64, height=48)
            writer.write(record)

    loaded = _load(tmp_path / "ds", tmp_path)
    assert isinstance(loaded.features["png"], datasets.Image)
    rows = list(loaded)
    assert sorted(r["png"].size for r in rows if r["png"] is not None) == [(64, 48)] * 3
    assert sum(r["jpg"] is not None for r in rows) == 3


def test_card_of_a_folder_without_samples_names_no_config(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path / "empty"):
        pass
    card = (tmp_path / "empty" / "README.md").read_text()
    assert card.startswith("---\n") and "config_name" not in card
    assert "0 accepted image-text pairs in 0 WebDataset shards" in card


def test_shards_load_without_the_card_given_its_features(
    list_source_folder: Path, tmp_path: Path
) -> None:
    from lait.dataset.card import hf_features

    (list_source_folder / "README.md").unlink()
    shards = sorted(str(p) for p in list_source_folder.glob("*.tar"))
    loaded = _load("webdataset", tmp_path, data_files=shards, features=hf_features())
    assert loaded.num_rows == 10 and isinstance(loaded.features["jpg"], datasets.Image)
    assert loaded[9]["json"]["page_url"] == "http://127.0.0.1/index.html"
