"""The Karpathy retrieval protocol: captions grouped by image, any caption a hit, chance right."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from pretrain.evaluate import (
    DEFAULT_MAX_TEXT_LEN,
    chance_recall,
    group_by_image,
    read_max_text_len,
    recall_at,
    retrieval,
)
from pretrain.shards import RawSample

# 2 to 5 captions per image, 6 images.
CAPTIONS_PER_IMAGE = [2, 5, 3, 4, 2, 5]
IMAGE_OF = torch.tensor([i for i, c in enumerate(CAPTIONS_PER_IMAGE) for _ in range(c)])
N_IMAGES, N_TEXTS = len(CAPTIONS_PER_IMAGE), len(IMAGE_OF)
TRUTH = torch.arange(N_IMAGES)[:, None] == IMAGE_OF[None, :]


def oracle_similarity(seed: int = 0) -> torch.Tensor:
    """Images x texts: every true pair above every false one, noise within each."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(N_IMAGES, N_TEXTS, generator=generator) * 0.4
    return torch.where(TRUTH, 0.6 + noise, noise)


def constant_itm(images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    return torch.zeros(len(images))


def test_a_perfect_model_scores_one_with_many_captions_per_image() -> None:
    sim = oracle_similarity()
    result = retrieval(sim, constant_itm, IMAGE_OF, top_k=4, rerank="itm+itc")
    for direction in ("i2t", "t2i"):
        assert result[direction] == {"r1": 1.0, "r5": 1.0, "r10": 1.0}
        assert result["first_pass"][direction]["r1"] == 1.0
    assert result["images"] == N_IMAGES and result["samples"] == N_TEXTS
    # The per-sample protocol (each caption its own image, only the diagonal a hit) scored a
    # perfect model below 1 here: that was the bug.
    per_sample = sim[IMAGE_OF]  # texts x texts: caption t's image against every caption
    assert recall_at(per_sample)["r1"] < 1.0


def test_itm_reranks_within_the_groups() -> None:
    # A first pass that puts a wrong candidate first everywhere, an ITM oracle that fixes it.
    sim = oracle_similarity()
    wrong = (~TRUTH).float() * 2.0 + sim  # every false pair above every true one
    truth = TRUTH

    def oracle_itm(images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        return torch.where(truth[images, texts], 0.0, -50.0)

    result = retrieval(wrong, oracle_itm, IMAGE_OF, top_k=N_TEXTS, rerank="itm")
    assert result["first_pass"]["i2t"]["r1"] == 0.0 and result["first_pass"]["t2i"]["r1"] == 0.0
    assert result["i2t"]["r1"] == 1.0 and result["t2i"]["r1"] == 1.0


def test_a_constant_model_never_beats_chance_and_chance_is_exact() -> None:
    result = retrieval(torch.zeros(N_IMAGES, N_TEXTS), constant_itm, IMAGE_OF, top_k=4)
    for direction in ("i2t", "t2i"):
        assert result[direction]["r1"] == 0.0  # ties count against the query
        for k in ("r1", "r5", "r10"):
            assert result[direction][k] <= result["chance"][direction][k]
    # Text→image: one true image among 6.
    assert result["chance"]["t2i"] == pytest.approx({"r1": 1 / 6, "r5": 5 / 6, "r10": 1.0})
    # Image→text: an image with c of the 21 captions is hit at 1 with probability c / 21.
    assert result["chance"]["i2t"]["r1"] == pytest.approx(sum(CAPTIONS_PER_IMAGE) / 6 / N_TEXTS)
    expected_r5 = sum(
        1 - math.comb(N_TEXTS - c, 5) / math.comb(N_TEXTS, 5) for c in CAPTIONS_PER_IMAGE
    )
    assert result["chance"]["i2t"]["r5"] == pytest.approx(expected_r5 / 6)
    assert result["chance_r1"] == pytest.approx((1 / 6 + 21 / 6 / 21) / 2)


def test_a_random_model_scores_chance_on_average() -> None:
    generator = torch.Generator().manual_seed(1)
    trials = 400
    hits = {"i2t": 0.0, "t2i": 0.0}
    for _ in range(trials):
        sim = torch.rand(N_IMAGES, N_TEXTS, generator=generator)
        hits["i2t"] += recall_at(sim, truth=TRUTH)["r5"]
        hits["t2i"] += recall_at(sim.T, truth=TRUTH.T)["r1"]
    assert hits["i2t"] / trials == pytest.approx(chance_recall(TRUTH)["r5"], abs=0.03)
    assert hits["t2i"] / trials == pytest.approx(chance_recall(TRUTH.T)["r1"], abs=0.03)


def test_ties_between_true_candidates_do_not_count_against_the_query() -> None:
    scores = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    truth = torch.tensor([[True, True, False, False]])
    assert recall_at(scores, ks=(1, 2), truth=truth) == {"r1": 0.0, "r2": 1.0}
    assert recall_at(torch.tensor([[1.0, 1.0, 0.5]]), ks=(1,), truth=truth[:, :3])["r1"] == 1.0


def test_samples_group_into_images_by_content() -> None:
    def sample(key: str, image: bytes, caption: str) -> RawSample:
        return RawSample(key, {"jpg": image, "txt": caption.encode()})

    samples = [
        sample("a", b"one", "first"),
        sample("b", b"two", "second"),
        sample("c", b"one", "third"),  # the same image bytes, crawled from another URL
        RawSample("d", {"jpg": b"three"}),  # no caption: counted, skipped
    ]
    grouped = group_by_image(samples)
    assert grouped.captions == ["first", "second", "third"]
    assert grouped.image_of == [0, 1, 0] and grouped.n_images == 2 and grouped.corrupt == 1
    kept = grouped.keep_images([1])
    assert kept.captions == ["second"] and kept.image_of == [0]


def test_the_text_length_comes_from_the_checkpoint(tmp_path: Path) -> None:
    final = tmp_path / "run" / "02-cc_sbu" / "final"
    final.mkdir(parents=True)
    assert read_max_text_len(final) == DEFAULT_MAX_TEXT_LEN
    (tmp_path / "run" / "plan.yaml").write_text(
        "stages:\n- {name: web, max_text_len: 24}\n- {name: cc_sbu, max_text_len: 32}\n"
    )
    assert read_max_text_len(final) == 32
    (final / "training_args.json").write_text(json.dumps({"max_text_len": 20}))
    assert read_max_text_len(final) == 20
