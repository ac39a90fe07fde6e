"""Karpathy-format benchmarks from local files, and the demo web's miniature one, evaluated
through the CLI and the Python API on a tiny checkpoint."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tiny_plans import train_tiny_checkpoint

from lait.cli import main
from lait.demo_web import build_site
from lait.demo_web.benchmark import crawled_scenes, scene_content, write_demo_benchmark
from pretrain.benchmark import (
    BenchmarkError,
    KarpathyImage,
    _average,
    evaluate_benchmark,
    protocols,
    read_karpathy,
)
from pretrain.evaluate import evaluate, load_checkpoint

N_TEST, N_TRAIN = 12, 16


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    return train_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("benchmark")
    return write_demo_benchmark(folder, n_train=N_TRAIN, n_test=N_TEST, image_size=64)


def write_image(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path, "JPEG")


def test_karpathy_files_are_read_with_coco_folders_and_clear_errors(tmp_path: Path) -> None:
    entries: list[dict[str, Any]] = [
        {
            "filepath": "val2014",
            "filename": f"COCO_val2014_{i}.jpg",
            "split": split,
            "cocoid": 100 + i,
            "sentences": [{"raw": f" caption {i}.{j} ", "tokens": []} for j in range(7)],
        }
        for i, split in enumerate(["test", "train", "restval", "test"])
    ]
    karpathy = tmp_path / "dataset_coco.json"
    karpathy.write_text(json.dumps({"dataset": "coco", "images": entries}))
    for entry in entries:
        write_image(tmp_path / "images" / entry["filepath"] / entry["filename"], (9, 9, 9))
    test = read_karpathy(karpathy, tmp_path / "images")
    assert [i.image_id for i in test] == ["100", "103"]
    assert test[0].captions == tuple(f"caption 0.{j}" for j in range(5))  # the first five
    assert test[0].path == tmp_path / "images" / "val2014" / "COCO_val2014_0.jpg"
    train = read_karpathy(
        karpathy, tmp_path / "images", ("train", "restval"), captions_per_image=None
    )
    assert len(train) == 2 and len(train[0].captions) == 7

    with pytest.raises(BenchmarkError, match="no Karpathy split file"):
        read_karpathy(tmp_path / "nope.json", tmp_path / "images")
    with pytest.raises(
        BenchmarkError, match=r"split val .*splits are \['restval', 'test', 'train'\]"
    ):
        read_karpathy(karpathy, tmp_path / "images", ("val",))
    (tmp_path / "images" / "val2014" / "COCO_val2014_3.jpg").unlink()
    with pytest.raises(BenchmarkError, match=r"1 of 2 test images .*COCO_val2014_3\.jpg"):
        read_karpathy(karpathy, tmp_path / "images")


def test_coco_runs_5k_and_the_five_1k_folds_averaged() -> None:
    images = [KarpathyImage(str(i), Path(f"{i}.jpg"), "test", ("a",)) for i in range(5000)]
    runs = protocols("coco", images)
    assert len(runs["5k"]) == 1 and len(runs["5k"][0]) == 5000
    assert [len(f) for f in runs["1k"]] == [1000] * 5 and runs["1k"][1][0].image_id == "1000"
    assert list(protocols("flickr30k", images[:1000])) == ["1k"]

    def fold(r1: float) -> dict[str, Any]:
        recall = {"r1": r1, "r5": 0.5, "r10": 1.0}
        return {
            "i2t": recall,
            "t2i": recall,
            "first_pass": {"i2t": recall, "t2i": recall},
            "chance": {"i2t": recall, "t2i": recall},
            "chance_r1": 0.1,
            "r1_mean": r1,
            "r1_over_chance": r1 / 0.1,
            "images": 1000,
            "samples": 5000,
        }

    mean = _average([fold(0.2), fold(0.4)])
    assert mean["i2t"]["r1"] == pytest.approx(0.3) and mean["first_pass"]["t2i"][
        "r1"
    ] == pytest.approx(0.3)
    assert len(mean["folds"]) == 2 and mean["images"] == 1000


def test_the_demo_benchmark_holds_out_its_scenes_with_several_captions(tmp_path: Path) -> None:
    site = build_site(seed=0, n_images=60)
    crawled = crawled_scenes(site)
    path = write_demo_benchmark(tmp_path, n_train=20, n_test=10, image_size=64, exclude=crawled)
    data = json.loads(path.read_text())
    assert data["dataset"] == "demo"
    by_split = {s: [i for i in data["images"] if i["split"] == s] for s in ("train", "test")}
    assert len(by_split["train"]) == 20 and len(by_split["test"]) == 10
    content = {
        split: {json.dumps(i["scene"]["objects"]) + i["scene"]["layout"] for i in images}
        for split, images in by_split.items()
    }
    assert not content["train"] & content["test"]
    excluded = {scene_content(s) for s in crawled}
    for image in data["images"]:
        captions = [s["raw"] for s in image["sentences"]]
        assert len(set(captions)) == len(captions) == 5
        objects = image["scene"]["objects"]
        assert all(o["colour"] in captions[0] and o["shape"] in captions[0] for o in objects)
        key = (
            image["scene"]["layout"],
            tuple((o["shape"], o["colour"], o["size"]) for o in objects),
        )
        assert key not in excluded
        assert Image.open(tmp_path / "images" / image["filename"]).size == (64, 64)
    again = write_demo_benchmark(
        tmp_path / "again", n_train=20, n_test=10, image_size=64, exclude=crawled
    )
    assert again.read_text() == path.read_text()


def test_evaluate_the_miniature_benchmark_from_the_api_and_the_cli(
    checkpoint: str, benchmark: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = benchmark.parent / "images"
    loaded = load_checkpoint(checkpoint)
    assert loaded.max_text_len == 24  # the plan's, read from the run's plan.yaml
    result = evaluate_benchmark(loaded, benchmark, images)
    figures = result["protocols"]["all"]
    assert result["benchmark"] == "custom" and result["split"] == "test"
    assert figures["images"] == N_TEST and figures["samples"] == 5 * N_TEST
    assert figures["chance"]["t2i"]["r1"] == pytest.approx(1 / N_TEST)
    assert figures["max_text_len"] == 24
    for direction in ("i2t", "t2i"):
        assert 0.0 <= figures[direction]["r1"] <= figures[direction]["r5"] <= 1.0

    args = ["evaluate", checkpoint, "--karpathy-json", str(benchmark), "--images", str(images)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "TR R@1" in table and "IR R@1" in table and "this checkpoint" in table
    assert "not published here" in table
    assert main([*args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["protocols"]["all"]["i2t"] == figures["i2t"]
    # Flickr30k's 1K protocol prints ImageBERT's published zero-shot figures beside ours.
    assert main([*args, "--benchmark", "flickr30k", "--top-k", "4"]) == 0
    assert "ImageBERT (paper), zero-shot  70.7  90.2  94.0 |  54.3  79.6  87.5" in (
        capsys.readouterr().out
    )
    # Clear errors, not tracebacks.
    assert main([*args[:-1], str(images / "missing")]) == 2
    assert "no images folder" in capsys.readouterr().err
    assert main([*args, "--split", "val"]) == 2
    assert "split val" in capsys.readouterr().err


def test_a_dataset_folder_is_evaluated_grouped_by_image(checkpoint: str, tmp_path: Path) -> None:
    from lait.dataset import DatasetWriter
    from lait.record import CaptionSource, Record

    with DatasetWriter(str(tmp_path / "ds"), samples_per_shard=10, overwrite=True) as writer:
        for i in range(4):
            buffer = io.BytesIO()
            Image.new("RGB", (64, 64), (60 * i, 255 - 60 * i, 90)).save(buffer, "JPEG")
            for j in range(3):  # three captions of each image, crawled from three pages
                record = Record.candidate(
                    source="test",
                    url=f"http://127.0.0.1/{j}/{i}.jpg",
                    caption=f"picture {i} caption {j}",
                    caption_source=CaptionSource.ALT,
                )
                image = buffer.getvalue()
                record = replace(
                    record,
                    image=image,
                    image_format="jpg",
                    width=64,
                    height=64,
                    num_bytes=len(image),
                )
                writer.write(record.accepted())
    metrics = evaluate(checkpoint, str(tmp_path / "ds"), top_k=4)
    assert metrics["images"] == 4 and metrics["samples"] == 12
    assert metrics["chance"]["t2i"]["r1"] == pytest.approx(1 / 4)
    assert metrics["chance"]["i2t"]["r1"] == pytest.approx(3 / 12)
    assert 0.0 <= metrics["itm_acc"] <= 1.0 and metrics["max_text_len"] == 24
