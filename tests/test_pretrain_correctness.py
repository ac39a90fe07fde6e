"""What the objectives learn from: hard negatives by ITC logits, no repeat as a negative, ITM on
clean inputs, MOC only on labelled regions, and ITC's DDP gradient equal to one process's."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_plans import tiny_config

from pretrain.data import CollatorConfig, PretrainCollator, PretrainStream, SourceSpec
from pretrain.inputs import model_inputs
from pretrain.model import ImageBertForPreTraining
from pretrain.objectives import itc, itm, repeats
from pretrain.regions import ClipGridRegions
from pretrain.regions.base import Regions
from pretrain.shards import read_shard
from pretrain.synthetic import tiny_clip, write_scene_folder

VOCAB = ["circle", "square", "triangle", "star", "background"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip_regions() -> ClipGridRegions:
    model, preprocess, tokenizer = tiny_clip("vit")
    return ClipGridRegions(model, preprocess, tokenizer, vocabulary=VOCAB)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_scene_folder(str(tmp_path_factory.mktemp("scenes")), 24, seed=4)


def tiny_model(regions: ClipGridRegions) -> ImageBertForPreTraining:
    return ImageBertForPreTraining(tiny_config(regions))


def batch_of(scenes: str, regions: ClipGridRegions, tokenizer, n: int = 8):  # type: ignore[no-untyped-def]
    collator = PretrainCollator(tokenizer, regions, CollatorConfig())
    return next(iter(PretrainStream([SourceSpec(scenes)], regions, collator, n, seed=0)))


def _entropy(logits: torch.Tensor) -> float:
    """Mean entropy of each row's softmax over the off-diagonal entries."""
    masked = logits.float().masked_fill(torch.eye(len(logits), dtype=torch.bool), float("-inf"))
    p = masked.softmax(-1)
    return float(-(p * p.clamp(min=1e-12).log()).sum(-1).mean())


def test_hard_negatives_are_drawn_by_the_itc_logits_not_raw_cosines(
    scenes: str, clip_regions: ClipGridRegions, tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    n = 16
    batch = batch_of(scenes, clip_regions, tokenizer, n)
    regions = clip_regions.encode(batch["regions"], "cpu")
    model = tiny_model(clip_regions)
    # A real model's similarities: a few ITC steps on the batch, as early pre-training has.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    only_itc = {"mlm": 0.0, "moc": 0.0, "mrfr": 0.0, "itm": 0.0, "itc": 1.0}
    for _ in range(55):
        inputs = model_inputs(batch, regions, torch.Generator().manual_seed(0), "cpu")
        loss = model(**inputs, objective_weights=only_itc).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seen: list[torch.Tensor] = []
    draw = itm.hard_negative_pairs

    def spy(logits: torch.Tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(logits)
        return draw(logits, *args, **kwargs)

    monkeypatch.setattr(itm, "hard_negative_pairs", spy)
    model.eval()
    inputs = model_inputs(batch, regions, torch.Generator().manual_seed(0), "cpu")
    with torch.no_grad():
        model(**inputs, itm_negatives="hard", objective_weights={"itm": 1.0, "itc": 1.0})
        text = model.embed_text(inputs["itc_input_ids"], inputs["itc_attention_mask"])
        image = model.embed_image(
            inputs["itc_region_features"], inputs["itc_region_boxes"], inputs["itc_region_mask"]
        )
    cosine = image @ text.t()
    scale = model.contrastive.logit_scale.exp()
    torch.testing.assert_close(seen[0], scale * cosine)
    uniform = math.log(n - 1)
    assert _entropy(cosine) > 0.95 * uniform  # what the sampler saw before: nearly uniform
    assert _entropy(seen[0]) < 0.7 * uniform  # now: peaked on the similar pairs


def _items_with_repeats(scenes: str, regions: ClipGridRegions) -> list[tuple[str, str, dict, str]]:
    samples = read_shard(sorted(Path(scenes).glob("*.tar"))[0].as_posix()).samples[:8]
    items = [(s.key, s.caption(), regions.prepare(s), s.content_id) for s in samples]
    # Rows 0-3 are one image under four captions; rows 4 and 5 one caption on two images.
    items[1] = (items[1][0], items[1][1], items[0][2], items[0][3])
    items[2] = (items[2][0], items[2][1], items[0][2], items[0][3])
    items[3] = (items[3][0], items[3][1], items[0][2], items[0][3])
    items[5] = (items[5][0], items[4][1].upper(), items[5][2], items[5][3])
    return items


def test_repeated_images_and_captions_are_never_itm_negatives(
    scenes: str, clip_regions: ClipGridRegions, tokenizer
) -> None:  # type: ignore[no-untyped-def]
    items = _items_with_repeats(scenes, clip_regions)
    collator = PretrainCollator(tokenizer, clip_regions, CollatorConfig())
    for seed in range(40):
        batch = collator(items, np.random.default_rng(seed))
        images, captions = batch["image_ids"], batch["caption_ids"]
        negatives = batch["itm_labels"] == 0
        c, i = batch["caption_index"][negatives], batch["image_index"][negatives]
        assert negatives.sum() == 8  # every row still finds a real negative here
        assert (images[c] != images[i]).all() and (captions[c] != captions[i]).all()
    # One image under every caption: no negative exists, and none is invented.
    same = [(k, c, items[0][2], items[0][3]) for k, c, _, _ in items]
    batch = collator(same, np.random.default_rng(0))
    assert (batch["itm_labels"][8:] == itm.IGNORE).all()
    logits = torch.randn(16, 2)
    value, accuracy = itm.loss(logits, batch["itm_labels"])
    torch.testing.assert_close(value, F.cross_entropy(logits[:8], batch["itm_labels"][:8]))
    assert float(accuracy) == float((logits[:8].argmax(-1) == 1).float().mean())


def test_hard_negatives_skip_repeats() -> None:
    n = 6
    images = torch.tensor([1, 1, 2, 3, 4, 5])
    captions = torch.tensor([10, 11, 12, 13, 14, 14])
    repeat = repeats.interchangeable(images, captions, images, captions)
    logits = torch.zeros(n, n)
    logits[0, 1] = logits[1, 0] = logits[4, 5] = logits[5, 4] = 50.0  # the repeats look best
    for _ in range(50):
        caption, image, valid = itm.hard_negative_pairs(logits, "both", repeat=repeat)
        assert valid.all()
        assert not repeat[caption, image].any()


def test_itc_leaves_repeats_out_of_the_softmax() -> None:
    torch.manual_seed(0)
    image = F.normalize(torch.randn(5, 8), dim=-1)
    text = F.normalize(torch.randn(5, 8), dim=-1)
    text[1] = text[0]  # rows 0 and 1: the same caption
    images = torch.tensor([0, 1, 2, 3, 4])
    captions = torch.tensor([7, 7, 8, 9, 10])
    scale = torch.tensor(10.0)
    value, _ = itc.loss(image, text, scale, 0.0, images, captions)
    logits = scale * image @ text.t()
    blocked = torch.zeros(5, 5, dtype=torch.bool)
    blocked[0, 1] = blocked[1, 0] = True
    expected = (
        F.cross_entropy(logits.masked_fill(blocked, float("-inf")), torch.arange(5))
        + F.cross_entropy(logits.t().masked_fill(blocked, float("-inf")), torch.arange(5))
    ) / 2
    torch.testing.assert_close(value, expected)
    plain, _ = itc.loss(image, text, scale)
    assert float(plain) > float(value)  # the repeat counted as a negative before


def test_itm_sees_clean_text_and_regions(
    scenes: str, clip_regions: ClipGridRegions, tokenizer
) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    batch = batch_of(scenes, clip_regions, tokenizer, 6)
    regions = clip_regions.encode(batch["regions"], "cpu")
    model = tiny_model(clip_regions).eval()
    inputs = model_inputs(batch, regions, torch.Generator().manual_seed(0), "cpu")
    passes: list[tuple[torch.Tensor, torch.Tensor]] = []
    hook = model.imagebert.register_forward_hook(
        lambda _m, args, _o: passes.append((args[0], args[2])) if len(args) > 2 else None
    )
    with torch.no_grad():
        out = model(**inputs, objective_weights={"mlm": 1.0, "moc": 1.0, "mrfr": 1.0, "itm": 1.0})
    hook.remove()
    masked, clean = passes
    assert (masked[0] == tokenizer.mask_token_id).any()  # MLM's pass is masked
    assert not torch.equal(masked[1], regions.features)  # and so are its regions
    ids, features = clean
    assert ids.shape[0] == 12 and not (ids == tokenizer.mask_token_id).any()
    torch.testing.assert_close(features, regions.features[batch["image_index"]])
    # ITM's scores are those of the scoring path evaluation uses on the same clean rows.
    scores = model.itm_scores(
        ids,
        inputs["itm_attention_mask"],
        features,
        inputs["itm_region_boxes"],
        inputs["itm_region_mask"],
    )
    assert out.itm_logits is not None
    torch.testing.assert_close(out.itm_logits.float().log_softmax(-1)[:, 1], scores)


def test_moc_skips_regions_without_a_class_distribution(
    clip_regions: ClipGridRegions,
) -> None:
    torch.manual_seed(0)
    model = tiny_model(clip_regions)
    n, r = 2, 4
    features = torch.randn(n, r, clip_regions.feature_dim)
    probs = torch.zeros(n, r, clip_regions.num_classes)
    probs[0, :, 2] = 1.0  # sample 0 is labelled, sample 1 has no probabilities
    masked = torch.ones(n, r, dtype=torch.bool)
    out = model(
        torch.tensor([[101, 2000, 102]] * n),
        torch.ones(n, 3, dtype=torch.long),
        features,
        torch.rand(n, r, 5),
        torch.ones(n, r, dtype=torch.bool),
        masked_regions=masked,
        region_probs=probs,
        objective_weights={"mlm": 0.0, "moc": 1.0, "mrfr": 0.0, "itm": 0.0},
    )
    assert out.moc_logits is not None and out.moc_logits.shape[0] == r  # sample 0's only


def _ddp_itc_rank(rank: int, world: int, port: int, data: dict[str, torch.Tensor]) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        tower = torch.nn.Linear(6, 4)
        tower.load_state_dict({"weight": data["weight"], "bias": data["bias"]})
        half = data["x"].shape[0] // world
        rows = slice(rank * half, (rank + 1) * half)
        image = F.normalize(tower(data["x"][rows]), dim=-1)
        text = F.normalize(tower(data["y"][rows]), dim=-1)
        value, _ = itc.loss(
            image, text, torch.tensor(5.0), 1.0, data["images"][rows], data["captions"][rows]
        )
        value.backward()
        for p in tower.parameters():  # what DDP does: average the ranks' gradients
            assert p.grad is not None
            dist.all_reduce(p.grad)
            p.grad /= world
        torch.testing.assert_close(tower.weight.grad, data["grad_weight"], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(tower.bias.grad, data["grad_bias"], atol=1e-6, rtol=1e-5)
    finally:
        dist.destroy_process_group()


def test_ddp_itc_gradient_equals_the_single_process_full_batch_gradient() -> None:
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    tower = torch.nn.Linear(6, 4)
    x, y = torch.randn(8, 6), torch.randn(8, 6)
    # A repeat across ranks: row 1 (rank 0) and row 6 (rank 1) are one image.
    images = torch.tensor([0, 1, 2, 3, 4, 5, 1, 7])
    captions = torch.arange(10, 18)
    image, text = F.normalize(tower(x), dim=-1), F.normalize(tower(y), dim=-1)
    value, _ = itc.loss(image, text, torch.tensor(5.0), 1.0, images, captions)
    value.backward()
    assert tower.weight.grad is not None and tower.bias.grad is not None
    data = {
        "weight": tower.weight.detach().clone(),
        "bias": tower.bias.detach().clone(),
        "x": x,
        "y": y,
        "images": images,
        "captions": captions,
        "grad_weight": tower.weight.grad.clone(),
        "grad_bias": tower.bias.grad.clone(),
    }
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_itc_rank, args=(2, port, data), nprocs=2, join=True)


def test_regions_index_keeps_class_probs() -> None:
    # The clean ITM rows index the B images' regions; their labels travel with them.
    regions = Regions(
        torch.zeros(2, 3, 4),
        torch.zeros(2, 3, 5),
        torch.ones(2, 3),
        torch.eye(3)[None].repeat(2, 1, 1),
    )
    picked = regions.index(torch.tensor([1, 0, 1]))
    assert picked.class_probs is not None and picked.class_probs.shape == (3, 3, 3)


def test_grounding_points_from_the_clean_pass_of_matched_rows(
    scenes: str, clip_regions: ClipGridRegions, tokenizer
) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    batch = batch_of(scenes, clip_regions, tokenizer, 6)
    length = batch["itc_input_ids"].shape[1]
    batch["grounding_points"] = torch.rand(6, length, 2)
    batch["grounding_mask"] = batch["itc_attention_mask"].bool()
    regions = clip_regions.encode(batch["regions"], "cpu")
    config = tiny_model(clip_regions).config
    config.grounding_head = True
    model = ImageBertForPreTraining(config).eval()
    inputs = model_inputs(batch, regions, torch.Generator().manual_seed(0), "cpu")
    passes: list[torch.Tensor] = []
    hook = model.imagebert.register_forward_hook(
        lambda _m, args, _o: passes.append(args[0]) if len(args) > 2 else None
    )
    weights = {"mlm": 0.0, "moc": 0.0, "mrfr": 0.0, "itm": 0.0, "grounding": 1.0}
    with torch.no_grad():
        out = model(**inputs, objective_weights=weights)
    hook.remove()
    assert set(out.losses) == {"grounding"}
    (ids,) = passes  # one pass: the 6 matched rows, unmasked (a word is where it is said)
    assert ids.shape[0] == 6 and not (ids == tokenizer.mask_token_id).any()
    torch.testing.assert_close(ids, batch["itc_input_ids"])
