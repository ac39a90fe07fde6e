"""`lait pretrain` and `lait evaluate` from the command line, on the shipped demo plan."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import pretrain
from lait.cli import main
from pretrain.model import ImageBertForPreTraining
from pretrain.synthetic import write_scene_folder

DEMO_PLAN = Path(pretrain.__file__).parent / "plans" / "demo.yaml"


def test_pretrain_then_evaluate_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_scene_folder(str(tmp_path / "data" / "web"), 48, seed=1, source="web")
    write_scene_folder(str(tmp_path / "data" / "cc_sbu"), 32, seed=2, source="cc")
    run = tmp_path / "run"
    args = [
        "pretrain",
        str(DEMO_PLAN),
        "--out",
        str(run),
        "--no-progress",
        "--set",
        f"data_root={tmp_path / 'data'}",
        "--set",
        "stages.*.steps=3",
        "--set",
        "stages.*.batch_size=8",
        "--set",
        "num_workers=0",
        "--set",
        "evaluate.max_samples=16",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    final = run / "02-cc_sbu" / "final"
    assert f"final checkpoint: {final}" in printed and "image→text R@1" in printed
    layers = yaml.safe_load(DEMO_PLAN.read_text())["model"]["num_hidden_layers"]
    assert ImageBertForPreTraining.from_pretrained(final).config.num_hidden_layers == layers

    assert (
        main(
            [
                "evaluate",
                str(final),
                str(tmp_path / "data" / "web"),
                "--max-samples",
                "16",
                "--top-k",
                "4",
            ]
        )
        == 0
    )
    assert "ITM acc" in capsys.readouterr().out
    # Precompute the demo plan's clip-grid regions (the real CLIP loader on the Beam worker).
    web = tmp_path / "data" / "web"
    assert main(["featurize", str(web), "--direct_running_mode=in_memory"]) == 0
    assert "featurized 48 samples in 3 shards" in capsys.readouterr().out
    assert sorted(p.name for p in (web / "regions").glob("*.tar")) == [
        p.name for p in sorted(web.glob("*.tar"))
    ]
    # A plan override that does not parse is a clear error, not a traceback.
    assert main(["pretrain", str(DEMO_PLAN), "--out", str(run), "--set", "oops"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
