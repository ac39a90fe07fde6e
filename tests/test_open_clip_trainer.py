"""open_clip's own trainer (`open_clip_train.main`) trains on LAIT folders, one or a mix.

The trainer reads shards through webdataset; with our pins it must get past the end of each
shard (webdataset >= 0.2.96 yields an end-of-shard marker open_clip 3.3.0 reads as a file:
KeyError 'fname'), and a mix of folders must be counted from every folder's sizes.json.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lait.cli import main as lait_main
from lait.dataset import DatasetWriter, shard_mix
from lait.record import Record

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A CLIP small enough for a few CPU steps: one ViT block on 32px images, one text block.
TINY_MODEL = "lait-test-tiny-vit"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import open_clip

    path = tmp_path_factory.mktemp("model_configs") / f"{TINY_MODEL}.json"
    path.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(path)
    yield TINY_MODEL


def _write_folder(
    folder: Path, make_accepted: Callable[..., Record], first: int, n: int, per_shard: int
) -> None:
    with DatasetWriter(folder, samples_per_shard=per_shard) as writer:
        writer.write_all(make_accepted(i) for i in range(first, first + n))


def _train(tmp_path: Path, model: str, data_args: list[str], batch_size: int) -> Path:
    from open_clip_train.main import main as train_main

    logs = tmp_path / "logs"
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    train_main(
        [
            *data_args,
            "--dataset-type",
            "webdataset",
            "--model",
            model,
            "--pretrained",
            "",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--workers",
            "0",
            "--batch-size",
            str(batch_size),
            "--epochs",
            "1",
            "--lr",
            "1e-3",
            "--warmup",
            "1",
            "--logs",
            str(logs),
            "--name",
            "run",
            "--seed",
            "0",
            "--log-every-n-steps",
            "1",
        ]
    )
    # open_clip's main points the root logger at its own file at INFO; put it back.
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers, root.level = handlers, level
    return logs / "run"


def test_trainer_runs_over_every_shard_reading_sizes_json(
    tmp_path: Path, make_accepted: Callable[..., Record], tiny_model: str
) -> None:
    folder = tmp_path / "web"
    _write_folder(folder, make_accepted, 0, 20, per_shard=4)  # 5 shards, 5 shard ends

    from lait.dataset import DatasetFolder

    run = _train(tmp_path, tiny_model, ["--train-data", DatasetFolder(folder).webdataset_urls()], 4)

    assert (run / "checkpoints" / "epoch_1.pt").is_file()
    log = (run / "out.log").read_text()
    # 20 samples from sizes.json / batch 4 = 5 steps; the last one logs [20/20 (100%)].
    assert "Train Epoch: 0 [20/20 (100%)]" in log, log[-2000:]


def test_trainer_trains_on_a_mix_with_the_total_lait_info_prints(
    tmp_path: Path,
    make_accepted: Callable[..., Record],
    tiny_model: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from open_clip_train.data import get_dataset_size

    a, b = tmp_path / "a", tmp_path / "b"
    _write_folder(a, make_accepted, 0, 6, per_shard=3)  # 00000.tar 00001.tar
    _write_folder(b, make_accepted, 100, 12, per_shard=4)  # 00000.tar .. 00002.tar
    mix = shard_mix([a, b])
    assert mix.train_data == f"{a}/{{00000..00001}}.tar::{b}/{{00000..00002}}.tar"
    assert mix.num_samples == 18
    assert mix.samples_per_folder == {str(a): 6, str(b): 12}

    # What open_clip would do alone: B's shards looked up in A's sizes.json.
    with pytest.raises(KeyError):
        get_dataset_size(mix.train_data)
    assert get_dataset_size(f"{a}/00000.tar::{b}/00000.tar")[0] == 6  # B counted as 3, not 4

    assert lait_main(["info", str(a), str(b)]) == 0
    printed = capsys.readouterr().out
    assert f"--train-data '{mix.train_data}' --train-num-samples 18" in printed

    run = _train(tmp_path, tiny_model, mix.open_clip_args(), 6)
    assert (run / "checkpoints" / "epoch_1.pt").is_file()
    assert "Train Epoch: 0 [18/18 (100%)]" in (run / "out.log").read_text()


def test_a_mix_refuses_a_folder_twice_and_a_stale_sizes_json(
    tmp_path: Path, make_accepted: Callable[..., Record]
) -> None:
    from lait.dataset import DatasetFolderError

    _write_folder(tmp_path / "a", make_accepted, 0, 4, per_shard=2)
    with pytest.raises(ValueError, match="given twice"):
        shard_mix([tmp_path / "a", tmp_path / "a"])
    (tmp_path / "a" / "sizes.json").write_text(json.dumps({"00000.tar": 2}))
    with pytest.raises(DatasetFolderError, match=r"does not list \['00001.tar'\]"):
        shard_mix([tmp_path / "a"])
