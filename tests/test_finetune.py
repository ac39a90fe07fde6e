"""Retrieval fine-tuning on the demo web's miniature benchmark, from a tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_plans import train_tiny_checkpoint

from lait.cli import main
from lait.demo_web.benchmark import write_demo_benchmark
from pretrain.evaluate import load_checkpoint, region_source_for
from pretrain.finetune import FinetuneConfig, finetune, hard_negatives
from pretrain.model import ImageBertForPreTraining


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    return train_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("benchmark")
    return write_demo_benchmark(folder, n_train=24, n_test=10, image_size=64)


def test_hard_negatives_follow_similarity_and_skip_excluded_pairs() -> None:
    similarity = torch.tensor([[9.0, 8.0, 0.0, -20.0], [9.0, 9.0, 9.0, 9.0], [0.0, 0.0, 5.0, 0.0]])
    excluded = torch.tensor(
        [[True, False, False, False], [True, True, True, True], [False, False, True, True]]
    )
    picks: dict[int, list[int]] = {0: [], 2: []}
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        rows, columns = hard_negatives(similarity, excluded, 1, generator)
        assert not bool(excluded[rows, columns].any())  # never the same image or caption
        assert 1 not in rows.tolist()  # a query with nothing allowed gets nothing
        for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
            picks[row].append(column)
    # Row 0 draws by softmax(similarity): column 1 (8.0) far more often than 2 (0.0), never 3.
    assert picks[0].count(1) > 190 and 3 not in picks[0]
    rows, columns = hard_negatives(similarity, excluded, 3, generator)
    assert sorted(columns[rows == 0].tolist()) == [1, 2, 3] and (rows == 2).sum() == 2


def test_finetune_runs_saves_a_loadable_checkpoint_and_its_loss_falls(
    checkpoint: str, benchmark: Path, tmp_path: Path
) -> None:
    images = benchmark.parent / "images"
    config = FinetuneConfig(epochs=50, max_steps=20, batch_size=16, lr=1e-3, top_k=4)
    result = finetune(checkpoint, benchmark, images, tmp_path / "ft", config)
    losses = result["losses"]
    assert result["steps"] == 20 and len(losses) == 20 and result["splits"] == ["train"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    # Every positive got its negatives: 16 positives, one hard caption and one hard image each.
    assert all(h["pairs"] == 48 for h in result["history"])
    for figures in (result["zero_shot"], result["finetuned"]):
        assert figures["protocols"]["all"]["images"] == 10
    out = tmp_path / "ft"
    model = ImageBertForPreTraining.from_pretrained(out)
    assert model.config.hidden_size == 32
    assert json.loads((out / "training_args.json").read_text())["max_text_len"] == 24
    assert load_checkpoint(out).max_text_len == 24 and region_source_for(out).max_regions == 17
    assert json.loads((out / "summary.json").read_text())["steps"] == 20
    # The fine-tuned weights differ from the checkpoint's.
    before = ImageBertForPreTraining.from_pretrained(checkpoint).itm_head.weight
    assert not torch.allclose(before, model.itm_head.weight)


def test_finetune_from_the_cli(
    checkpoint: str, benchmark: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = benchmark.parent / "images"
    args = ["finetune", checkpoint, "--karpathy-json", str(benchmark), "--images", str(images)]
    assert main([*args, "--out", str(tmp_path / "ft"), "--max-steps", "3", "--lr", "1e-3"]) == 0
    printed = capsys.readouterr().out
    assert "fine-tuned 3 steps" in printed and "zero-shot" in printed and "TR R@1" in printed
    assert (tmp_path / "ft" / "regions.json").is_file()
    missing = ["finetune", checkpoint, "--karpathy-json", str(tmp_path / "none.json")]
    assert main([*missing, "--images", str(images), "--out", str(tmp_path / "y")]) == 2
    assert "no Karpathy split file" in capsys.readouterr().err
