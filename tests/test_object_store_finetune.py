"""`lait finetune --out gs://... / s3://...`: the fine-tuned model saved locally and uploaded
whole (summary last), on the local emulators; an unwritable bucket is refused before work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from object_stores import ObjectStore, server, store
from tiny_plans import train_tiny_checkpoint

from lait.dataset import OutputLocationError
from lait.demo_web.benchmark import write_demo_benchmark
from pretrain.evaluate import load_checkpoint
from pretrain.finetune import FinetuneConfig, finetune
from pretrain.model import ImageBertForPreTraining

__all__ = ["server", "store"]  # the fixtures, imported for pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    return train_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("benchmark")
    return write_demo_benchmark(folder, n_train=12, n_test=6, image_size=64)


def test_finetune_writes_its_checkpoint_into_the_bucket(
    store: ObjectStore, checkpoint: str, benchmark: Path, tmp_path: Path
) -> None:
    out = store.unique_url("ft")
    config = FinetuneConfig(max_steps=3, batch_size=8, lr=1e-3, evaluate=False)
    result = finetune(checkpoint, benchmark, benchmark.parent / "images", out, config)
    assert result["checkpoint"] == out and result["steps"] == 3
    fs = store.filesystem()
    fs.invalidate_cache()
    names = {p.rsplit("/", 1)[-1] for p in fs.find(out)}
    assert {"config.json", "model.safetensors", "regions.json", "training_args.json"} <= names
    assert json.loads(fs.cat(f"{out}/summary.json"))["steps"] == 3
    assert not Path(f"{store.scheme}:").exists()  # no local `gs:/...` folder
    local = tmp_path / "copy"
    fs.get(out + "/", str(local) + "/", recursive=True)
    assert ImageBertForPreTraining.from_pretrained(local).config.hidden_size == 32
    assert load_checkpoint(out).max_text_len == 24  # read straight from the bucket too


def test_finetune_into_a_missing_bucket_is_refused_before_any_work(
    store: ObjectStore, checkpoint: str, benchmark: Path
) -> None:
    out = f"{store.scheme}://no-such-bucket-lait/ft"
    with pytest.raises(OutputLocationError, match="'no-such-bucket-lait' does not exist"):
        # No benchmark file either: the output is checked before anything is read.
        finetune(checkpoint, benchmark.parent / "none.json", benchmark.parent, out)
