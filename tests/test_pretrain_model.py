"""The ImageBERT model, region sources, objectives and collator, on tiny real parts."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_plans import tiny_config

from pretrain.config import ImageBertConfig
from pretrain.data import (
    CollatorConfig,
    PretrainCollator,
    PretrainStream,
    SourceSpec,
    held_out,
    iter_held_out,
)
from pretrain.inputs import model_inputs
from pretrain.model import ImageBertForPreTraining, init_text_from_bert
from pretrain.objectives import itm, mlm
from pretrain.regions import ClipGridRegions, PrecomputedRegions
from pretrain.regions.precomputed import normalise_boxes
from pretrain.shards import RawSample, read_shard
from pretrain.synthetic import tiny_clip, write_scene_folder
from pretrain.text import default_bert_path

VOCAB = ["circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "background"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip_regions() -> ClipGridRegions:
    model, preprocess, tokenizer = tiny_clip("vit")
    return ClipGridRegions(model, preprocess, tokenizer, vocabulary=VOCAB)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_scene_folder(str(tmp_path_factory.mktemp("scenes")), 24, seed=3)


def fixed_batch(scenes: str, regions: ClipGridRegions, tokenizer, n: int = 8):  # type: ignore[no-untyped-def]
    collator = PretrainCollator(tokenizer, regions, CollatorConfig())
    stream = PretrainStream([SourceSpec(scenes)], regions, collator, n, seed=0)
    return next(iter(stream))


@pytest.mark.parametrize("objective", ["mlm", "moc", "mrfr", "itm", "itc"])
def test_each_loss_decreases_on_a_fixed_batch(
    objective: str, scenes: str, clip_regions: ClipGridRegions, tokenizer
) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    batch = fixed_batch(scenes, clip_regions, tokenizer)
    regions = clip_regions.encode(batch["regions"], "cpu")
    model = ImageBertForPreTraining(tiny_config(clip_regions))
    weights = {name: 0.0 for name in ("mlm", "moc", "mrfr", "itm", "itc")}
    weights[objective] = 1.0
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        # The same masks every step: a fixed batch to memorise.
        inputs = model_inputs(batch, regions, torch.Generator().manual_seed(0), "cpu")
        out = model(**inputs, objective_weights=weights)
        assert set(out.losses) == {objective}
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.75 * losses[0], (objective, losses[0], losses[-1])


def test_save_pretrained_round_trip(tmp_path: Path, clip_regions: ClipGridRegions) -> None:
    model = ImageBertForPreTraining(tiny_config(clip_regions)).eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = ImageBertForPreTraining.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config.region_feature_dim == clip_regions.feature_dim
    assert loaded.mlm_head.decoder.weight is loaded.imagebert.embeddings.word_embeddings.weight
    ids = torch.tensor([[101, 1037, 2417, 4418, 102]])
    feats, boxes = torch.randn(1, 4, clip_regions.feature_dim), torch.rand(1, 4, 5)
    a = model.imagebert(ids, None, feats, boxes).last_hidden_state
    b = loaded.imagebert(ids, None, feats, boxes).last_hidden_state
    torch.testing.assert_close(a, b)


def test_text_side_initialises_from_the_shipped_bert() -> None:
    from transformers import BertModel

    config = ImageBertConfig(region_feature_dim=8, num_region_classes=3, num_hidden_layers=2)
    model = ImageBertForPreTraining(config).eval()
    copied = init_text_from_bert(model, default_bert_path())
    assert "imagebert.layers.1.attention.qkv.weight" in copied
    bert = BertModel.from_pretrained(default_bert_path()).eval()
    bert.encoder.layer = bert.encoder.layer[:2]
    ids = torch.tensor([[101, 1037, 2417, 4418, 2157, 1997, 1037, 2630, 2732, 102]])
    with torch.no_grad():
        ours = model.imagebert(ids).last_hidden_state
        theirs = bert(ids).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_tokenizer_has_the_full_vocabulary(tokenizer) -> None:  # type: ignore[no-untyped-def]
    assert len(tokenizer) == 30522
    assert tokenizer.convert_tokens_to_ids("circle") != tokenizer.unk_token_id


@pytest.mark.parametrize("kind", ["vit", "rn"])
def test_clip_grid_regions(kind: str, scenes: str) -> None:
    model, preprocess, tok = tiny_clip(kind)
    source = ClipGridRegions(model, preprocess, tok, vocabulary=VOCAB)
    samples = read_shard(sorted(Path(scenes).glob("*.tar"))[0].as_posix()).samples[:3]
    batch = source.collate([source.prepare(s) for s in samples])
    regions = source.encode(batch, "cpu")
    n, r = 3, source.max_regions
    assert regions.features.shape == (n, r, source.feature_dim)
    assert regions.boxes.shape == (n, r, 5) and regions.mask.all()
    assert regions.class_probs is not None and regions.class_probs.shape == (n, r, len(VOCAB))
    torch.testing.assert_close(regions.class_probs.sum(-1), torch.ones(n, r))
    # The grid tiles the image: areas add up to 1 and the last box ends at the corner.
    assert regions.boxes[0, :, 4].sum().item() == pytest.approx(1.0)
    assert regions.boxes[0, -1, 2:4].tolist() == [1.0, 1.0]


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_precomputed_regions_from_shard_and_sidecar(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    inline = _npz(
        features=rng.normal(size=(3, 6)).astype(np.float32),
        boxes=np.array([[0, 0, 50, 50], [50, 50, 100, 100], [0, 0, 100, 100]], np.float32),
        cls_prob=np.eye(3, 4, dtype=np.float32),
        image_w=np.array(100),
        image_h=np.array(100),
    )
    _write_tar(
        tmp_path / "00000.tar",
        {"a.jpg": b"x", "a.txt": b"one", "a.npz": inline, "b.jpg": b"x", "b.txt": b"two"},
    )
    (tmp_path / "regions").mkdir()
    side = _npz(features=np.ones((2, 6), np.float32), norm_bb=np.full((2, 4), 0.5, np.float32))
    _write_tar(tmp_path / "regions" / "00000.tar", {"b.npz": side})
    source = PrecomputedRegions(6, 4, max_regions=5)
    samples = {s.key: s for s in read_shard(str(tmp_path / "00000.tar"), "", "regions").samples}
    a, b = source.prepare(samples["a"]), source.prepare(samples["b"])
    assert a["mask"].tolist() == [True, True, True, False, False]
    np.testing.assert_allclose(a["boxes"][1], [0.5, 0.5, 1.0, 1.0, 0.25])
    assert b["mask"].sum() == 2 and not b["class_probs"].any()  # no probabilities, no label
    regions = source.encode(source.collate([a, b]), "cpu")
    assert regions.features.shape == (2, 5, 6)
    labels = regions.labels()
    assert labels is not None and labels[0, :3].tolist() == [0, 1, 2]


def test_pixel_boxes_without_image_size_are_an_error() -> None:
    from pretrain.shards import CorruptSampleError

    with pytest.raises(CorruptSampleError):
        normalise_boxes(np.array([[0, 0, 50, 50]], np.float32), None, None)
    source = PrecomputedRegions(6, 0)
    with pytest.raises(CorruptSampleError, match="featurize"):
        source.prepare(RawSample("k", {"jpg": b"x"}))


def test_mlm_masking_rates_and_special_tokens() -> None:
    rng = np.random.default_rng(0)
    ids = np.tile(np.arange(1000, 1050), (400, 1))
    special = np.zeros_like(ids, dtype=bool)
    special[:, 0] = special[:, -1] = True
    masked, labels = mlm.mask_tokens(
        ids, special, rng, mask_token_id=103, vocab_size=30522, probability=0.15
    )
    chosen = labels != mlm.IGNORE
    assert not chosen[special].any()
    assert chosen.mean() == pytest.approx(0.15 * 48 / 50, abs=0.01)
    assert (masked[chosen] == 103).mean() == pytest.approx(0.8, abs=0.02)
    assert (masked[chosen] == ids[chosen]).mean() == pytest.approx(0.1, abs=0.02)
    assert (masked[~chosen] == ids[~chosen]).all()


def test_whole_word_masking_masks_all_pieces(tokenizer) -> None:  # type: ignore[no-untyped-def]
    enc = tokenizer(["a hexagonal tessellation"] * 50, return_special_tokens_mask=True)
    ids = np.array(enc["input_ids"])
    word_ids = [enc.word_ids(i) for i in range(50)]
    _, labels = mlm.mask_tokens(
        ids,
        np.array(enc["special_tokens_mask"], bool),
        np.random.default_rng(0),
        mask_token_id=103,
        vocab_size=30522,
        probability=0.3,
        word_ids=word_ids,
    )
    for row, words in zip(labels != mlm.IGNORE, word_ids, strict=True):
        for word in {w for w in words if w is not None}:
            pieces = [row[i] for i, w in enumerate(words) if w == word]
            assert all(pieces) or not any(pieces)


def test_itm_negatives_never_pair_a_sample_with_itself() -> None:
    rng = np.random.default_rng(0)
    for n in (2, 3, 17):
        captions, images, valid = itm.negative_pairs(n, rng, "both")
        assert (captions != images).all() and valid.all()
    with pytest.raises(ValueError, match="at least 2"):
        itm.derangement(1, rng)


def test_hard_negatives_follow_similarity_and_never_pair_a_sample_with_itself() -> None:
    torch.manual_seed(0)
    n = 6
    # Image i's most similar other caption is i+1 (mod n), by a wide margin.
    similarity = torch.zeros(n, n)
    similarity[torch.arange(n), (torch.arange(n) + 1) % n] = 20.0
    similarity += 30.0 * torch.eye(n)
    for swap in ("caption", "image", "both"):
        captions, images, valid = itm.hard_negative_pairs(similarity, swap)
        assert (captions != images).all() and valid.all()
    captions, images, _ = itm.hard_negative_pairs(similarity, "caption")
    assert images.tolist() == list(range(n))
    assert captions.tolist() == [(i + 1) % n for i in range(n)]
    captions, images, _ = itm.hard_negative_pairs(similarity, "image")
    assert images.tolist() == [(i - 1) % n for i in range(n)]  # column i's best other row
    # Flat similarities: every other caption is drawn (a softmax, not an argmax).
    drawn = {int(itm.hard_negative_pairs(torch.zeros(n, n), "caption")[0][0]) for _ in range(200)}
    assert drawn == set(range(1, n))


def test_hard_negative_rows_reuse_the_clean_matched_rows(
    scenes: str, clip_regions: ClipGridRegions, tokenizer
) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    batch = fixed_batch(scenes, clip_regions, tokenizer, n=6)
    regions = clip_regions.encode(batch["regions"], "cpu")
    model = ImageBertForPreTraining(tiny_config(clip_regions)).eval()
    inputs = model_inputs(batch, regions, torch.Generator().manual_seed(0), "cpu")
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    hook = model.imagebert.register_forward_hook(
        lambda _module, args, _output: seen.append((args[0], args[2])) if len(args) > 2 else None
    )
    weights = {"mlm": 1.0, "moc": 1.0, "mrfr": 1.0, "itm": 1.0, "itc": 1.0}
    out = model(**inputs, objective_weights=weights, itm_negatives="hard")
    hook.remove()
    assert set(out.losses) == {"mlm", "moc", "mrfr", "itm", "itc"}
    ids, features = seen[-1]  # the ITC passes, the masked pass, then the clean ITM pass
    assert ids.shape[0] == 12 and not (ids == tokenizer.mask_token_id).any()
    for row in range(6, 12):
        text_row = [j for j in range(6) if torch.equal(ids[row], inputs["itm_input_ids"][j])]
        region_row = [
            j for j in range(6) if torch.equal(features[row], inputs["itm_region_features"][j])
        ]
        assert text_row and region_row, "each negative is built from clean matched rows"
        assert text_row[0] != region_row[0], "and never pairs a caption with its own image"
    with pytest.raises(ValueError, match="ITC inputs"):
        model(
            **{k: v for k, v in inputs.items() if not k.startswith("itc_")},
            objective_weights=weights,
            itm_negatives="hard",
        )


def test_collator_masks_matched_rows_and_keeps_itm_rows_clean(
    scenes: str, clip_regions: ClipGridRegions, tokenizer
) -> None:  # type: ignore[no-untyped-def]
    batch = fixed_batch(scenes, clip_regions, tokenizer, n=6)
    assert batch["input_ids"].shape[0] == 6 and batch["itm_input_ids"].shape[0] == 12
    assert batch["itm_labels"].tolist() == [1] * 6 + [0] * 6
    assert (batch["mlm_labels"] != mlm.IGNORE).any(dim=1).all()
    assert (batch["input_ids"] == tokenizer.mask_token_id).any()
    # ITM sees unmasked captions: row j is caption `caption_index[j]` as tokenised.
    assert not (batch["itm_input_ids"] == tokenizer.mask_token_id).any()
    assert torch.equal(batch["itm_input_ids"], batch["itc_input_ids"][batch["caption_index"]])


def test_corrupt_members_are_skipped_and_counted(
    tmp_path: Path, clip_regions: ClipGridRegions, tokenizer
) -> None:  # type: ignore[no-untyped-def]
    good = read_shard(
        sorted(Path(write_scene_folder(str(tmp_path / "ok"), 4)).glob("*.tar"))[0].as_posix()
    ).samples
    members: dict[str, bytes] = {}
    for s in good:
        members.update({f"{s.key}.{ext}": data for ext, data in s.files.items()})
    members["broken.jpg"], members["broken.txt"] = b"not a jpeg", b"a broken image"
    members["nocaption.jpg"] = good[0].files["jpg"]
    folder = tmp_path / "bad"
    folder.mkdir()
    _write_tar(folder / "00000.tar", members)
    # A truncated second shard: the part before the damage is still read.
    whole = io.BytesIO()
    with tarfile.open(fileobj=whole, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name.replace(".", "x.", 1))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (folder / "00001.tar").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    collator = PretrainCollator(tokenizer, clip_regions, CollatorConfig())
    stream = iter(PretrainStream([SourceSpec(str(folder))], clip_regions, collator, 4))
    batches = [next(stream) for _ in range(4)]
    assert sum(b["corrupt"] for b in batches) >= 3
    assert all("broken" not in b["keys"] and "nocaption" not in b["keys"] for b in batches)


def test_the_hold_out_follows_the_image_not_the_url(tmp_path: Path) -> None:
    # The same scenes served from two places (as a recrawl of the demo web on another port):
    # different keys, the same split.
    here = write_scene_folder(str(tmp_path / "here"), 60, seed=3, source="web")
    there = write_scene_folder(str(tmp_path / "there"), 60, seed=3, source="cc")
    split_here = [s.content_id for s in iter_held_out([here], 0.3)]
    split_there = [s.content_id for s in iter_held_out([there], 0.3)]
    assert 5 <= len(split_here) <= 30 and split_here == split_there
    keys_here = {s.key for s in iter_held_out([here], 0.3)}
    assert keys_here.isdisjoint(s.key for s in iter_held_out([there], 0.3))
    # Every caption of a held-out image is held out with it.
    image = next(iter_held_out([here], 0.3)).files["jpg"]
    other = RawSample("other-url", {"jpg": image, "txt": b"another caption"})
    assert held_out(other.content_id, 0.3)
    assert RawSample("x", {"txt": b"no image"}).content_id == "x"
