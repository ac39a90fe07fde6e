"""Issue 8's pretrainer variants: Pixel-BERT `pixels` regions, focal ITC, text-driven soft masks
and multimodal augmentation, each on tiny real parts and from a stage plan."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from pretrain.config import ImageBertConfig
from pretrain.evaluate import evaluate, region_source_for
from pretrain.model import ImageBertForPreTraining
from pretrain.objectives import augment, itc, soft_mask
from pretrain.pixel_backbone import PixelBackbone, load_backbone_weights
from pretrain.plan import PlanError, load_plan
from pretrain.regions import ClipGridRegions, PixelRegions
from pretrain.shards import read_shard
from pretrain.synthetic import tiny_clip, write_scene_folder
from pretrain.text import load_tokenizer
from pretrain.trainer import run_plan

PLANS = Path(__file__).resolve().parents[1] / "pretrain" / "plans"
TINY_BACKBONE = {"type": "resnet", "width": 8, "depths": [1, 1]}  # stride 4
TINY_MODEL: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "contrastive_dim": 16,
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():  # type: ignore[no-untyped-def]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_scene_folder(str(tmp_path_factory.mktemp("scenes")), 48, seed=4)


def pixel_model(sample: int = 100, **extra: Any) -> ImageBertForPreTraining:
    config = ImageBertConfig(
        **TINY_MODEL,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        region_feature_dim=16,
        num_region_classes=1,
        visual_backbone=TINY_BACKBONE,
        pixel_sample=sample,
        **extra,
    )
    return ImageBertForPreTraining(config)


# ---------------------------------------------------------------------------------------------
# Pixel-BERT


def test_pixel_source_and_backbone_make_grid_tokens_sampled_only_in_training(scenes: str) -> None:
    source = PixelRegions(TINY_BACKBONE, image_size=32, sample=10)
    assert source.feature_dim == 16 and source.max_regions == 64  # 8 x 8 cells
    samples = read_shard(sorted(Path(scenes).glob("*.tar"))[0].as_posix()).samples[:3]
    regions = source.encode(source.collate([source.prepare(s) for s in samples]), "cpu")
    assert regions.pixels is not None and regions.pixels.shape == (3, 3, 32, 32)
    assert regions.features.shape == (3, 0, 16)
    model = pixel_model(sample=10)
    model.eval()
    cells = model.imagebert.pixel_regions(regions.pixels)
    assert cells.features.shape == (3, 64, 16) and cells.mask.all()
    assert cells.boxes[0, :, 4].sum().item() == pytest.approx(1.0)  # the grid tiles the image
    model.train()
    sampled = model.imagebert.pixel_regions(regions.pixels)
    assert sampled.features.shape == (3, 10, 16)
    # Each kept token is one of the image's cells, with that cell's box (BatchNorm aside).
    full_boxes = cells.boxes[0].tolist()
    assert all(box in full_boxes for box in sampled.boxes[1].tolist())
    assert len({tuple(b) for b in sampled.boxes[1].tolist()}) == 10


def test_pixel_model_trains_the_backbone_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = pixel_model(sample=20)
    ids = torch.tensor([[101, 1037, 4418, 102], [101, 1037, 2732, 102]])
    pixels = torch.randn(2, 3, 32, 32)
    out = model(
        ids.repeat(2, 1),
        torch.ones(4, 4, dtype=torch.long),
        pixel_values=pixels,
        image_index=torch.tensor([0, 1, 1, 0]),
        itm_labels=torch.tensor([1, 1, 0, 0]),
        positive=torch.tensor([True, True, False, False]),
        itc_input_ids=ids,
        itc_attention_mask=torch.ones(2, 4, dtype=torch.long),
        objective_weights={"mlm": 0.0, "moc": 0.0, "mrfr": 0.0, "itm": 1.0, "itc": 1.0},
    )
    out.loss.backward()
    assert set(out.losses) == {"itm", "itc"}
    stem = model.imagebert.visual.trunk.stem[0].weight  # type: ignore[union-attr,index]
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    model.eval().save_pretrained(tmp_path / "ckpt")
    loaded = ImageBertForPreTraining.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config.visual_backbone == TINY_BACKBONE
    a = model.imagebert.pixel_regions(pixels).features
    b = loaded.imagebert.pixel_regions(pixels).features
    torch.testing.assert_close(a, b)


def test_torchvision_resnet_weights_load_from_a_local_file(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = PixelBackbone({"type": "resnet18"})
    loaded = load_backbone_weights(backbone, path)
    assert "0.weight" in loaded and not any(name.startswith("fc") for name in loaded)
    torch.testing.assert_close(backbone.trunk[0].weight, reference.conv1.weight)  # type: ignore[index]
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_backbone_weights(backbone, tmp_path / "missing.pth")


def test_a_pixels_plan_turns_moc_and_mrfr_off_or_says_why() -> None:
    raw = {
        "regions": {"type": "pixels"},
        "stages": [{"name": "a", "sources": ["x"], "steps": 1, "objectives": {"itm": 1.0}}],
    }
    plan = load_plan(raw)
    assert plan.stages[0].objectives.moc == 0 and plan.stages[0].objectives.mrfr == 0
    raw["stages"][0]["objectives"] = {"moc": 1.0}  # type: ignore[index]
    with pytest.raises(PlanError, match=r"moc.*pixels"):
        load_plan(raw)


# ---------------------------------------------------------------------------------------------
# Focal ITC, soft masks, augmentation


def test_focal_itc_equals_plain_itc_when_gamma_is_zero() -> None:
    torch.manual_seed(0)
    image = F.normalize(torch.randn(6, 8), dim=-1)
    text = F.normalize(torch.randn(6, 8), dim=-1)
    scale = torch.tensor(10.0)
    # The plain ITC as the pretrainer had it: symmetric cross-entropy over in-batch pairs.
    logits = scale * image @ text.t()
    target = torch.arange(6)
    plain = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    value, _ = itc.loss(image, text, scale, gamma=0.0)
    assert torch.equal(value, plain)
    # The focal form's own formula at gamma = 0 is the cross-entropy too.
    torch.testing.assert_close(
        itc.focal_cross_entropy(logits, target, 1e-12), F.cross_entropy(logits, target)
    )
    # gamma > 0 shrinks easy rows more than hard ones.
    log_p = F.log_softmax(logits, -1)[target, target]
    easy, hard = int(log_p.argmax()), int(log_p.argmin())
    weight = (1 - log_p.exp()) ** 2
    assert weight[easy] < weight[hard]
    focal, _ = itc.loss(image, text, scale, gamma=2.0)
    assert focal < plain


def test_soft_masked_example_differs_only_in_the_words_most_attended_regions() -> None:
    torch.manual_seed(0)
    config = ImageBertConfig(**TINY_MODEL, region_feature_dim=12, num_region_classes=1)
    model = ImageBertForPreTraining(config).eval()
    ids = torch.tensor([[101, 1037, 2417, 4418, 102], [101, 1037, 2630, 2732, 102]])
    features, boxes = torch.randn(2, 9, 12), torch.rand(2, 9, 5)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 7:] = False  # padding regions are never picked
    words = torch.tensor([3, 2])
    out = model.imagebert(ids, None, features, boxes, mask, attention_queries=words)
    attention = out.query_attention
    assert attention is not None and attention.shape == (2, 5 + 9)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2))
    assert (attention[1, 5 + 7 :] == 0).all()
    to_regions = attention[:, 5:]
    cfg = soft_mask.SoftMaskConfig(top_k=3, strength=0.8)
    masked, chosen = soft_mask.apply(features, to_regions, mask, cfg)
    changed = (masked != features).any(-1)
    for row in range(2):
        top = set(to_regions[row].topk(3).indices.tolist())
        assert set(changed[row].nonzero().flatten().tolist()) == top
        assert set(chosen[row].nonzero().flatten().tolist()) == top
    # Down-weighted in proportion to relevance, not removed: the most attended keeps 1 - 0.8.
    row0_top = int(to_regions[0].argmax())
    torch.testing.assert_close(masked[0, row0_top], 0.2 * features[0, row0_top])
    # A threshold selects every region at least that relevant.
    _, by_threshold = soft_mask.apply(
        features, to_regions, mask, soft_mask.SoftMaskConfig(select="threshold", threshold=0.9)
    )
    relevance = soft_mask.relevance(to_regions, mask)
    assert torch.equal(by_threshold, (relevance >= 0.9) & mask)


@pytest.mark.parametrize("label", ["matched", "unmatched"])
def test_soft_itm_labels_its_examples_as_configured(label: str) -> None:
    torch.manual_seed(0)
    config = ImageBertConfig(**TINY_MODEL, region_feature_dim=12, num_region_classes=1)
    model = ImageBertForPreTraining(config)
    ids = torch.tensor([[101, 1037, 2417, 4418, 102], [101, 1037, 2630, 2732, 102]])
    attention = torch.ones_like(ids)
    out = model(
        ids,
        attention,
        torch.randn(2, 6, 12),
        torch.rand(2, 6, 5),
        torch.ones(2, 6, dtype=torch.bool),
        soft_mask_words=torch.tensor([3, -1]),
        soft_mask_config=soft_mask.SoftMaskConfig(label=label, top_k=2),
        objective_weights={"mlm": 0.0, "moc": 0.0, "mrfr": 0.0, "itm": 0.0, "soft_itm": 1.0},
    )
    assert set(out.losses) == {"soft_itm"}
    target = 1 if label == "matched" else 0
    # Pushing the ITM head's bias toward the target lowers the loss.
    with torch.no_grad():
        model.itm_head.bias[target] += 5.0
    again = model(
        ids,
        attention,
        torch.randn(2, 6, 12),
        torch.rand(2, 6, 5),
        torch.ones(2, 6, dtype=torch.bool),
        soft_mask_words=torch.tensor([3, -1]),
        soft_mask_config=soft_mask.SoftMaskConfig(label=label, top_k=2),
        objective_weights={"mlm": 0.0, "moc": 0.0, "mrfr": 0.0, "itm": 0.0, "soft_itm": 1.0},
    )
    assert again.losses["soft_itm"] < out.losses["soft_itm"]


def test_soft_mask_words_are_content_words_of_matched_rows() -> None:
    tokenizer = load_tokenizer()
    enc = tokenizer(
        ["a red circle and a star", "the blue square"], padding=True, return_tensors="pt"
    )
    ids, attention = enc["input_ids"], enc["attention_mask"]
    positive = torch.tensor([True, False])
    skip = soft_mask.non_content_ids(tokenizer)
    generator = torch.Generator().manual_seed(0)
    picked = {
        tokenizer.convert_ids_to_tokens(
            int(ids[0, soft_mask.pick_words(ids, attention, positive, None, skip, generator)[0]])
        )
        for _ in range(40)
    }
    assert picked == {"red", "circle", "star"}
    words = soft_mask.pick_words(ids, attention, positive, None, skip, generator)
    assert int(words[1]) == -1


def test_augmented_views() -> None:
    generator = torch.Generator().manual_seed(0)
    ids = torch.tensor([[101, 5, 6, 7, 8, 102, 0], [101, 5, 102, 0, 0, 0, 0]])
    attention = (ids != 0).long()
    masked = augment.mask_text(ids, attention, 103, 0.9, generator)
    assert (masked[:, 0] == 101).all() and masked[0, 5] == 102 and masked[1, 2] == 102
    assert (masked[attention == 0] == 0).all() and (masked == 103).any()
    features = torch.randn(2, 5, 4)
    valid = torch.ones(2, 5, dtype=torch.bool)
    dropped = augment.distort_regions(features, valid, 0.0, 0.99, generator)
    assert ((dropped != 0).any(-1).sum(-1) >= 1).all()  # one region is always kept
    noisy = augment.distort_regions(features, valid, 0.5, 0.0, generator)
    assert not torch.equal(noisy, features) and noisy.shape == features.shape
    pixels = torch.randn(3, 3, 16, 16)
    view = augment.distort_pixels(pixels, 0.5, 0.3, generator)
    assert view.shape == pixels.shape and not torch.equal(view, pixels)
    with pytest.raises(ValueError, match="crop_scale"):
        augment.AugmentConfig(crop_scale=0.0)


# ---------------------------------------------------------------------------------------------
# Each variant from a stage plan: its loss falls.


def _first_last(run: Path) -> tuple[float, float]:
    lines = [json.loads(x) for x in (run / "01-web" / "log.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines]
    return sum(losses[:3]) / 3, sum(losses[-3:]) / 3


def _stage_plan(scenes: str, stage: dict[str, Any], **plan: Any) -> dict[str, Any]:
    return {
        "name": "variant",
        "seed": 0,
        "holdout": 0.2,
        "text_model": "none",
        "num_workers": 0,
        "log_every": 1,
        "save_every": 100,
        "model": TINY_MODEL,
        "evaluate": {"top_k": 4, "max_samples": 50, "after_each_stage": False},
        "stages": [
            {
                "name": "web",
                "sources": [{"path": scenes}],
                "steps": 15,
                "batch_size": 8,
                "lr": 2e-3,
                "warmup_steps": 2,
                **stage,
            }
        ],
        **plan,
    }


def test_pixelbert_plan_trains_and_evaluates_through_its_backbone(
    tmp_path: Path, scenes: str
) -> None:
    plan = load_plan(PLANS / "pixelbert.yaml")
    assert plan.regions.type == "pixels" and plan.stages[0].objectives.moc == 0
    raw = _stage_plan(
        scenes,
        {
            "objectives": {"mlm": 1.0, "itm": 1.0, "itc": 0.5},
            "augment": {"crop_scale": 0.7, "color_jitter": 0.2},
        },
        regions={"type": "pixels", "backbone": TINY_BACKBONE, "image_size": 32, "sample": 16},
    )
    result = run_plan(raw, out_dir=tmp_path, progress=False, final_eval=False)
    first, last = _first_last(tmp_path)
    assert last < first
    final = Path(result["final"])
    source = region_source_for(final)
    assert isinstance(source, PixelRegions) and source.sample == 16
    metrics = evaluate(final, scenes, holdout=0.2, top_k=4)
    assert metrics["samples"] >= 2 and 0.0 <= metrics["itm_acc"] <= 1.0


def test_softmask_plan_with_focal_itc_and_augmentation_trains(tmp_path: Path, scenes: str) -> None:
    plan = load_plan(PLANS / "softmask.yaml")
    assert plan.stages[0].objectives.soft_itm > 0 and plan.stages[0].itc_focal_gamma > 0
    model, preprocess, tokenizer = tiny_clip("vit")
    regions = ClipGridRegions(model, preprocess, tokenizer, vocabulary=["circle", "background"])
    raw = _stage_plan(
        scenes,
        {
            "objectives": {"mlm": 1.0, "moc": 0.0, "mrfr": 0.0, "itm": 1.0, "itc": 1.0},
            "itc_focal_gamma": 2.0,
            "soft_mask": {"top_k": 2, "strength": 0.9},
            "augment": {"text_mask": 0.15, "region_noise": 0.1, "region_dropout": 0.1},
        },
    )
    raw["stages"][0]["objectives"]["soft_itm"] = 1.0
    run_plan(raw, out_dir=tmp_path, progress=False, region_source=regions, final_eval=False)
    first, last = _first_last(tmp_path)
    assert last < first
    logged = json.loads((tmp_path / "01-web" / "log.jsonl").read_text().splitlines()[-1])
    assert {"soft_itm", "soft_itm_acc", "itc"} <= set(logged)
    assert math.isfinite(logged["soft_itm"])


def _itc_rank(rank: int, world: int, port: int, image: torch.Tensor, text: torch.Tensor) -> None:
    import torch.distributed as dist

    full, _ = itc.loss(image, text, torch.tensor(10.0), gamma=1.0)  # one process, whole batch
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        half = image.shape[0] // world
        rows = slice(rank * half, (rank + 1) * half)
        local_image = image[rows].clone().requires_grad_(True)
        value, _ = itc.loss(local_image, text[rows], torch.tensor(10.0), gamma=1.0)
        value.backward()
        assert local_image.grad is not None and local_image.grad.abs().sum() > 0
        total = value.detach().clone()
        dist.all_reduce(total)
        # Every rank's rows against every rank's batch: the ranks' mean is the whole batch's.
        torch.testing.assert_close(total / world, full)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes (~10 s)
def test_itc_negatives_are_gathered_across_ranks() -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.manual_seed(0)
    image = F.normalize(torch.randn(8, 6), dim=-1)
    text = F.normalize(torch.randn(8, 6), dim=-1)
    mp.spawn(_itc_rank, args=(2, port, image, text), nprocs=2, join=True)
