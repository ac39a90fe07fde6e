"""The staged trainer, its checkpoints and resume, the plan file, and evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from pretrain.evaluate import evaluate, read_max_text_len, recall_at, rerank_scores
from pretrain.model import ImageBertForPreTraining
from pretrain.plan import PlanError, load_plan
from pretrain.regions import ClipGridRegions
from pretrain.synthetic import tiny_clip, write_scene_folder
from pretrain.trainer import StopTraining, rank_resume_state, run_plan

VOCAB = ["circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "background"]
DEMO_PLAN = Path(__file__).resolve().parents[1] / "pretrain" / "plans" / "demo.yaml"


@pytest.fixture(autouse=True, scope="module")
def one_thread():  # type: ignore[no-untyped-def]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("data")
    return {
        "web": write_scene_folder(str(root / "web"), 40, seed=1),
        "cc": write_scene_folder(str(root / "cc"), 30, seed=2, source="cc"),
    }


@pytest.fixture(scope="module")
def regions() -> ClipGridRegions:
    model, preprocess, tokenizer = tiny_clip("vit")
    return ClipGridRegions(model, preprocess, tokenizer, vocabulary=VOCAB)


def tiny_plan(folders: dict[str, str], workers: int = 0) -> dict[str, Any]:
    return {
        "name": "tiny",
        "seed": 0,
        "holdout": 0.2,
        "text_model": "none",
        "num_workers": workers,
        "log_every": 1,
        "save_every": 3,
        "model": {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "contrastive_dim": 16,
        },
        "evaluate": {"top_k": 4, "max_samples": 50},
        "stages": [
            {
                "name": "web",
                "sources": [{"path": folders["web"]}],
                "steps": 6,
                "batch_size": 4,
                "lr": 1e-3,
                "warmup_steps": 2,
                "objectives": {"itc": 1.0},
            },
            {
                "name": "cc_sbu",
                "sources": [
                    {"path": folders["cc"], "weight": 0.5},
                    {"path": folders["web"], "weight": 0.5},
                ],
                "steps": 4,
                "batch_size": 4,
                "grad_accum": 2,
                "lr": 1e-3,
            },
        ],
    }


def losses(run: Path, stage: str) -> dict[int, float]:
    lines = (run / stage / "log.jsonl").read_text().splitlines()
    return {json.loads(line)["step"]: json.loads(line)["loss"] for line in lines}


def test_a_clip_grid_with_projected_features_and_a_whole_image_region() -> None:
    model, preprocess, tokenizer = tiny_clip("vit")
    source = ClipGridRegions(
        model,
        preprocess,
        tokenizer,
        vocabulary=VOCAB,
        pool=2,
        features="projected",
        global_region=True,
    )
    pixels = torch.rand(2, 3, 64, 64)
    regions = source.encode({"pixels": pixels}, "cpu")
    assert source.max_regions == 1 + 4  # 4x4 patches pooled to 2x2, plus the whole image
    assert regions.features.shape == (2, 5, 32)  # the joint space's width
    assert regions.boxes[0, 0].tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    image = model.encode_image(pixels)
    torch.testing.assert_close(regions.features[:, 0], image, atol=1e-5, rtol=1e-5)


def test_two_stage_plan_runs_and_each_stage_starts_from_the_last(
    tmp_path: Path, folders: dict[str, str], regions: ClipGridRegions
) -> None:
    plan = tiny_plan(folders)
    plan["stages"][1]["max_text_len"] = 24
    result = run_plan(
        plan, out_dir=tmp_path, region_source=regions, progress=False, evaluate_untrained=True
    )
    first, second = result["stages"]
    # The final model and the untrained baseline, on the held-out part of every source.
    assert result["final_eval"]["samples"] == result["untrained_eval"]["samples"]
    assert result["final_eval"]["samples"] > first["eval"]["samples"]
    assert first["steps"] == 6 and second["steps"] == 4
    assert set(first["last"]) >= {"mlm", "moc", "mrfr", "itm", "itc", "loss"}
    assert "itc" not in second["last"]  # stage 2's plan turns ITC off
    for summary in (first, second):
        assert summary["eval"]["samples"] >= 2
        assert set(summary["eval"]["i2t"]) == {"r1", "r5", "r10"}
    final = Path(result["final"])
    assert final == tmp_path / "02-cc_sbu" / "final"
    model = ImageBertForPreTraining.from_pretrained(final)
    assert model.config.region_feature_dim == regions.feature_dim
    assert (final / "regions.json").exists() and (final / "tokenizer.json").exists()
    # Evaluation tokenises at the length the stage trained at, which the checkpoint records.
    assert json.loads((final / "training_args.json").read_text())["max_text_len"] == 24
    assert read_max_text_len(final) == 24 and result["final_eval"]["max_text_len"] == 24
    # Stage 2 began where stage 1 ended: its first step's weights were stage 1's final ones.
    stage1 = ImageBertForPreTraining.from_pretrained(tmp_path / "01-web" / "final")
    assert not torch.equal(
        stage1.imagebert.pooler.weight, model.imagebert.pooler.weight
    )  # trained further
    assert (tmp_path / "01-web" / "tb").is_dir()
    # A rerun with resume skips finished stages.
    again = run_plan(tiny_plan(folders), out_dir=tmp_path, region_source=regions, progress=False)
    assert again["stages"][0]["seconds"] == first["seconds"]


@pytest.mark.parametrize("workers", [0, 2])
def test_killed_and_resumed_run_continues_exactly(
    tmp_path: Path, folders: dict[str, str], regions: ClipGridRegions, workers: int
) -> None:
    plan = tiny_plan(folders, workers)
    plan["evaluate"]["after_each_stage"] = False
    plan["stages"] = plan["stages"][:1]
    whole_run = run_plan(plan, out_dir=tmp_path / "whole", region_source=regions, progress=False)
    with pytest.raises(StopTraining):
        # Checkpoint at step 3; the run dies during step 5, losing step 4.
        run_plan(
            plan,
            out_dir=tmp_path / "killed",
            region_source=regions,
            progress=False,
            stop_after_steps=4,
        )
    resumed = run_plan(plan, out_dir=tmp_path / "killed", region_source=regions, progress=False)
    assert resumed["stages"][0]["steps"] == 6
    # The summary covers the whole stage, not only the steps since the resume.
    done, expected = resumed["stages"][0], whole_run["stages"][0]
    assert done["samples"] == expected["samples"] == 6 * 4
    assert done["first"] == pytest.approx(expected["first"], rel=1e-6)
    assert done["last"] == pytest.approx(expected["last"], rel=1e-6)
    whole, killed = losses(tmp_path / "whole", "01-web"), losses(tmp_path / "killed", "01-web")
    assert sorted(killed) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert killed[step] == pytest.approx(whole[step], rel=1e-6, abs=1e-6), step
    a = ImageBertForPreTraining.from_pretrained(tmp_path / "whole" / "01-web" / "final")
    b = ImageBertForPreTraining.from_pretrained(tmp_path / "killed" / "01-web" / "final")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, msg=name)


def test_resume_with_more_ranks_restores_what_the_checkpoint_has() -> None:
    state = {
        "world_size": 1,
        "ranks": [{"rng": {"seed": 1}, "consumed": 7, "data": {0: "s"}, "workers": 1}],
    }
    assert rank_resume_state(state, 0, 1, 1) == (7, {0: "s"}, {"seed": 1})
    # Rank 0 keeps its RNGs but restarts its streams; rank 1, new, starts fresh (no IndexError).
    assert rank_resume_state(state, 0, 2, 1) == (0, None, {"seed": 1})
    assert rank_resume_state(state, 1, 2, 1) == (0, None, None)


def test_demo_plan_parses_with_overrides() -> None:
    plan = load_plan(DEMO_PLAN, {"data_root": "/data", "stages.*.steps": 3})
    assert [s.name for s in plan.stages] == ["web", "cc_sbu"]
    assert plan.stages[0].sources[0].path == "/data/web"
    assert all(s.steps == 3 for s in plan.stages)
    assert plan.regions.type == "clip-grid"


def test_plan_errors_name_the_key(folders: dict[str, str]) -> None:
    plan = tiny_plan(folders)
    plan["stages"][0]["stpes"] = 3
    with pytest.raises(PlanError, match="stpes"):
        load_plan(plan)
    with pytest.raises(PlanError, match="no stages"):
        load_plan({"name": "empty"})


def test_recall_counts_ties_against_the_query() -> None:
    assert recall_at(torch.zeros(4, 4))["r1"] == 0.0
    assert recall_at(torch.eye(4))["r1"] == 1.0
    scores = torch.tensor([[0.0, 1.0, 0.5], [0.0, 1.0, 0.5], [1.0, 0.0, 0.5]])
    assert recall_at(scores, ks=(1, 2)) == {"r1": pytest.approx(1 / 3), "r2": pytest.approx(2 / 3)}


def test_reranking_keeps_the_fused_order_of_large_scores() -> None:
    # First pass: every query's true candidate is second; the reranker puts it first, with
    # fused scores (log P_ITM + scaled similarity) far beyond where a sigmoid saturates.
    sim = torch.tensor([[0.8, 0.9, 0.1], [0.9, 0.8, 0.1], [0.9, 0.1, 0.8]])
    top = sim.topk(2, dim=1).indices
    fused = torch.where(top == torch.arange(3)[:, None], 40.0, 39.0)
    scores = rerank_scores(sim, top, fused)
    assert recall_at(sim)["r1"] == 0.0 and recall_at(scores)["r1"] == 1.0
    # Candidates outside the top-k keep their first-pass score, below every reranked one.
    assert scores[0, 2] == pytest.approx(0.1) and bool((scores.gather(1, top) >= 2.0).all())


def test_evaluate_a_checkpoint_folder(
    tmp_path: Path, folders: dict[str, str], regions: ClipGridRegions
) -> None:
    plan = tiny_plan(folders)
    plan["stages"] = plan["stages"][:1]
    plan["evaluate"]["after_each_stage"] = False
    result = run_plan(plan, out_dir=tmp_path, region_source=regions, progress=False)
    metrics = evaluate(result["final"], folders["cc"], region_source=regions, top_k=5)
    assert metrics["samples"] == 30 and metrics["chance_r1"] == pytest.approx(1 / 30)
    for key in ("itm_acc", "mlm_acc", "moc_acc", "r1_mean"):
        assert 0.0 <= metrics[key] <= 1.0
