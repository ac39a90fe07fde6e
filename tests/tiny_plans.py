"""Tiny pre-training set-ups for tests: a model config, a plan, a trainer-written checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tiny_config(regions: Any) -> Any:
    """An ImageBertConfig of 2 layers x 32 without dropout for a region source's features."""
    from pretrain.config import ImageBertConfig

    return ImageBertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        region_feature_dim=regions.feature_dim,
        num_region_classes=regions.num_classes,
        contrastive_dim=16,
    )


DEMO_VOCAB = ["circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "background"]


def demo_clip_plan(folder: str, steps: int = 3) -> dict[str, Any]:
    """A short ITC + ITM plan over the shipped demo CLIP's regions (so `regions.json` loads
    back), text length 24, on one dataset folder."""
    return {
        "name": "tiny",
        "text_model": "none",
        "num_workers": 0,
        "holdout": 0.2,
        "model": {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "contrastive_dim": 16,
        },
        "regions": {
            "type": "clip-grid",
            "model": "lait-demo-clip",
            "pool": 2,
            "features": "projected",
            "global_region": True,
            "vocabulary": DEMO_VOCAB,
        },
        "evaluate": {"after_each_stage": False},
        "stages": [
            {
                "name": "web",
                "sources": [{"path": folder}],
                "steps": steps,
                "batch_size": 8,
                "lr": 1e-3,
                "max_text_len": 24,
                "objectives": {"itc": 1.0, "itm": 1.0},
            }
        ],
    }


def train_tiny_checkpoint(root: Path) -> str:
    """Train `demo_clip_plan` on 24 demo scenes under `root`; return its `final/` folder."""
    from pretrain.synthetic import write_scene_folder
    from pretrain.trainer import run_plan

    folder = write_scene_folder(str(root / "web"), 24, seed=1)
    result = run_plan(
        demo_clip_plan(folder), out_dir=root / "run", progress=False, final_eval=False
    )
    return str(result["final"])
