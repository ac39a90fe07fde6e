"""Word grounding (issue 8, part 3): the demo web's narratives, trace targets, the head, use."""

from __future__ import annotations

import json
import random
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch

from lait.demo_web import DemoWebServer, build_site, describe_scene, random_scene
from lait.demo_web.narratives import narrate, narrative_records
from pretrain.grounding import caption_box_scores, evaluate_grounding, rank_captions_for_box
from pretrain.model import ImageBertForPreTraining
from pretrain.narratives import NarrativeIndex, parse_narrative, token_targets, word_points
from pretrain.objectives.grounding import box_area, point_accuracy, points_in_boxes
from pretrain.regions import ClipGridRegions
from pretrain.shards import read_shard, shard_paths
from pretrain.synthetic import tiny_clip, write_scene_folder
from pretrain.text import load_tokenizer
from pretrain.trainer import run_plan

VOCAB = ["circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "background"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():  # type: ignore[no-untyped-def]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _inside(point: dict[str, float], box: list[float]) -> bool:
    return box[0] <= point["x"] <= box[2] and box[1] <= point["y"] <= box[3]


# --- the demo web's narratives ---------------------------------------------------------------


def test_demo_web_traces_point_at_each_object_while_its_words_are_said() -> None:
    site = build_site(seed=5, n_images=40)
    records = narrative_records(site.ground_truth.references, seed=5, base_url="http://h")
    by_url = {"http://h" + ref.url: ref for ref in site.ground_truth.references}
    assert len(records) >= 30
    travelling = 0
    for record in records:
        ref = by_url[record["image_id"]]
        assert ref.scene is not None and record["caption"] == ref.true_caption
        trace = record["traces"][0]
        assert all(0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 for p in trace)
        boxes = record["utterance_boxes"]
        assert len(boxes) == len(record["timed_caption"])
        # Every object of the scene is named, and its box is the scene's, normalised.
        w, h = ref.scene.width, ref.scene.height
        true_boxes = {
            tuple(round(v, 4) for v in (o.box[0] / w, o.box[1] / h, o.box[2] / w, o.box[3] / h))
            for o in ref.scene.objects
        }
        assert {tuple(b) for b in boxes if b is not None} == true_boxes
        for utterance, box in zip(record["timed_caption"], boxes, strict=True):
            window = [
                p for p in trace if utterance["start_time"] <= p["t"] <= utterance["end_time"]
            ]
            assert window, utterance  # every word has trace points while it is said
            if box is not None:
                assert all(_inside(p, box) for p in window), (record["image_id"], utterance)
        # Between objects the mouse moves: some points lie outside every object.
        travelling += any(not any(_inside(p, list(b)) for b in true_boxes) for p in trace)
    assert travelling > len(records) // 2
    # Deterministic from the seed.
    assert narrative_records(build_site(seed=5, n_images=40).ground_truth.references, 5) == (
        narrative_records(site.ground_truth.references, 5)
    )


def test_the_server_serves_narratives_whose_image_ids_are_its_image_urls() -> None:
    site = build_site(seed=2, n_images=40)
    with DemoWebServer(site) as server:
        with urllib.request.urlopen(server.narratives_url, timeout=10) as response:
            lines = response.read().decode("utf-8").splitlines()
        first = json.loads(lines[0])
        assert first["image_id"].startswith(server.base_url + "/")
        assert set(first) >= {"dataset_id", "image_id", "annotator_id", "caption"}
        with urllib.request.urlopen(first["image_id"], timeout=10) as response:
            assert response.status == 200 and response.headers["Content-Type"].startswith("image/")


# --- trace → targets -------------------------------------------------------------------------


def _record() -> dict[str, Any]:
    return {
        "image_id": "http://127.0.0.1/img/1.jpg",
        "caption": "a hexagon, then nothing",
        "timed_caption": [
            {"utterance": "a", "start_time": 0.0, "end_time": 0.2},
            {"utterance": "hexagon,", "start_time": 0.3, "end_time": 0.6},
            {"utterance": "then", "start_time": 0.7, "end_time": 0.9},
            {"utterance": "nothing", "start_time": 5.0, "end_time": 6.0},
        ],
        "traces": [
            [{"x": 0.9, "y": 0.9, "t": 0.1}, {"x": 0.2, "y": 0.4, "t": 0.3}],
            [{"x": 0.4, "y": 0.2, "t": 0.5}, {"x": 0.5, "y": 0.5, "t": 0.8}],
        ],
    }


def test_a_words_target_is_the_mean_trace_point_in_its_window() -> None:
    points = word_points(_record())
    assert points[0] == pytest.approx((0.9, 0.9))
    assert points[1] == pytest.approx((0.3, 0.3))  # two points, across trace segments
    assert points[2] == pytest.approx((0.5, 0.5))
    assert points[3] is None  # no trace point while "nothing" was said


def test_every_word_piece_gets_its_words_point_and_untraced_words_none() -> None:
    tokenizer = load_tokenizer()
    narrative = parse_narrative(_record())
    targets = token_targets(tokenizer, [narrative.caption, "other"], [narrative, None], 16)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(narrative.caption)["input_ids"])
    assert tokens[:5] == ["[CLS]", "a", "he", "##xa", "##gon"]
    pieces = [tokens.index(t) for t in ("he", "##xa", "##gon")]
    for col in pieces:
        assert targets["mask"][0, col]
        assert targets["points"][0, col].tolist() == pytest.approx([0.3, 0.3])
    comma = tokens.index(",")
    assert targets["points"][0, comma].tolist() == pytest.approx([0.3, 0.3])  # "hexagon,"
    assert not targets["mask"][0, tokens.index("nothing")]
    assert not targets["mask"][0, 0] and not targets["mask"][0, tokens.index("[SEP]")]
    assert not targets["mask"][1].any()  # a sample without a narrative has no target


def test_samples_find_their_narratives_by_url_or_url_path(tmp_path: Path) -> None:
    folder = write_scene_folder(str(tmp_path / "web"), 6, narratives=str(tmp_path / "n.jsonl"))
    index = NarrativeIndex.load(str(tmp_path / "n.jsonl"))
    samples = [s for p in shard_paths(folder) for s in read_shard(p).samples]
    assert all(index.find(s) is not None for s in samples)
    moved = NarrativeIndex(
        [
            parse_narrative({**json.loads(line), "image_id": "http://elsewhere:8000/web/0/1.jpg"})
            for line in (tmp_path / "n.jsonl").read_text().splitlines()[1:2]
        ]
    )
    assert sum(moved.find(s) is not None for s in samples) == 1


# --- point accuracy and location-conditioned ranking -----------------------------------------


def test_point_accuracy_and_its_chance_level() -> None:
    points = torch.tensor([[0.5, 0.5], [0.1, 0.9], [0.25, 0.25]])
    boxes = torch.tensor([[0.4, 0.4, 0.6, 0.6], [0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.25, 0.25]])
    assert points_in_boxes(points, boxes).tolist() == [True, False, True]
    assert point_accuracy(points, boxes) == pytest.approx(2 / 3)
    assert box_area(boxes).tolist() == pytest.approx([0.04, 0.25, 0.0625])
    assert point_accuracy(points[:0], boxes[:0]) == 0.0


def test_captions_whose_words_point_into_the_box_rank_first() -> None:
    # Three captions' token points (padding last): only the second's words are in the box.
    points = torch.tensor(
        [
            [[0.8, 0.8], [0.9, 0.7], [0.5, 0.5]],
            [[0.2, 0.3], [0.25, 0.2], [0.0, 0.0]],
            [[0.2, 0.3], [0.9, 0.9], [0.0, 0.0]],
        ]
    )
    counted = torch.tensor([[True, True, True], [True, True, False], [True, True, False]])
    scores = caption_box_scores(points, counted, (0.1, 0.1, 0.4, 0.4))
    assert scores[1] == 0.0
    assert scores[1] > scores[2] > scores[0]


# --- the head trains from a stage plan, and is used ------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("grounding")
    narratives = str(root / "narratives.jsonl")
    folder = write_scene_folder(str(root / "web"), 40, seed=3, narratives=narratives)
    model, preprocess, tokenizer = tiny_clip("vit")
    regions = ClipGridRegions(model, preprocess, tokenizer, vocabulary=VOCAB)
    plan = {
        "name": "tiny-grounding",
        "holdout": 0.25,
        "text_model": "none",
        "num_workers": 0,
        "log_every": 1,
        "save_every": 100,
        "model": {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "contrastive_dim": 16,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        },
        "evaluate": {"top_k": 4, "max_samples": 50, "after_each_stage": False},
        "stages": [
            {
                "name": "grounding",
                "sources": [{"path": folder, "narratives": narratives}],
                "steps": 40,
                "batch_size": 8,
                "lr": 3e-3,
                "warmup_steps": 2,
                "objectives": {"mlm": 0.0, "moc": 0.0, "mrfr": 0.0, "itm": 0.0, "grounding": 1.0},
            }
        ],
    }
    result = run_plan(plan, out_dir=root / "run", region_source=regions, progress=False)
    return {"result": result, "regions": regions, "folder": folder, "narratives": narratives}


def test_the_grounding_loss_falls_on_scene_shards_from_a_stage_plan(
    trained: dict[str, Any],
) -> None:
    result = trained["result"]
    log = Path(result["out_dir"]) / "01-grounding" / "log.jsonl"
    steps = [json.loads(line) for line in log.read_text().splitlines()]
    assert all("grounding" in s for s in steps) and "mlm" not in steps[0]
    first = sum(s["grounding"] for s in steps[:5]) / 5
    last = sum(s["grounding"] for s in steps[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    figures = result["grounding_eval"]
    assert figures["samples"] >= 2 and figures["tokens"] > figures["samples"]
    assert 0.0 < figures["chance"] < 0.5 and 0.0 <= figures["point_acc"] <= 1.0
    model = ImageBertForPreTraining.from_pretrained(result["final"])
    assert model.config.grounding_head and model.grounding_head is not None


def test_held_out_point_accuracy_is_counted_over_boxed_words(trained: dict[str, Any]) -> None:
    model = ImageBertForPreTraining.from_pretrained(trained["result"]["final"])
    figures = evaluate_grounding(
        model,
        [(trained["folder"], trained["narratives"])],
        holdout=1.0,
        region_source=trained["regions"],
        max_samples=10,
    )
    # Ten scenes of 1-3 objects, each named by size, colour and shape: 3 words an object.
    assert figures["samples"] == 10 and figures["words"] % 3 == 0
    assert 30 <= figures["words"] <= 90 and figures["tokens"] >= figures["words"]


def test_rank_captions_for_a_box_scores_by_the_models_points(trained: dict[str, Any]) -> None:
    model = ImageBertForPreTraining.from_pretrained(trained["result"]["final"]).eval()
    regions_source = trained["regions"]
    sample = next(s for p in shard_paths(trained["folder"]) for s in read_shard(p).samples)
    regions = regions_source.encode(regions_source.collate([regions_source.prepare(sample)]), "cpu")
    tokenizer = load_tokenizer()
    scene = random_scene(random.Random(0), 96, 96)
    captions = [describe_scene(scene, random.Random(i)) for i in range(3)] + ["a red star"]
    ranked = rank_captions_for_box(model, tokenizer, regions, (0.0, 0.0, 0.5, 0.5), captions)
    assert sorted(c for c, _ in ranked) == sorted(captions)
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    assert all(s <= 0.0 for _, s in ranked)
    # A box covering the whole image holds every point: every caption scores 0.
    whole = rank_captions_for_box(model, tokenizer, regions, (0.0, 0.0, 1.0, 1.0), captions)
    assert all(s == 0.0 for _, s in whole)


def test_a_narrated_scene_names_every_object_once() -> None:
    scene = random_scene(random.Random(7), 300, 200)
    record = narrate(scene, describe_scene(scene, random.Random(1)), "x", random.Random(2))
    named = [b for b in record["utterance_boxes"] if b is not None]
    assert len(named) == 3 * len(scene.objects)
