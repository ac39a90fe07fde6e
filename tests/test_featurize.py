"""`lait featurize`: clip-grid regions precomputed into sidecars equal the on-the-fly ones."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest
import torch

from pretrain.featurize import featurize_dataset
from pretrain.regions import ClipGridRegions, PrecomputedRegions
from pretrain.shards import read_shard
from pretrain.synthetic import tiny_clip, write_scene_folder

VOCABULARY = ("circle", "square", "triangle", "star", "tree", "house")


def _corrupt_first_image(shard: str) -> str:
    """Replace the first sample's image in `shard` with bytes no decoder accepts."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar if m.isfile()]  # type: ignore[union-attr]
    victim = members[0][0].name.partition(".")[0]
    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            if member.name == f"{victim}.jpg":
                data = b"not an image at all"
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return victim


@pytest.fixture(scope="module")
def source() -> ClipGridRegions:
    model, preprocess, tokenizer = tiny_clip(image_size=64)
    return ClipGridRegions(model, preprocess, tokenizer, vocabulary=VOCABULARY, name="tiny")


def test_featurize_writes_sidecars_precomputed_reads(tmp_path, source) -> None:
    folder = write_scene_folder(str(tmp_path / "data"), 24, samples_per_shard=8, image_size=64)
    shards = sorted(str(p) for p in (tmp_path / "data").glob("*.tar"))
    assert len(shards) == 3
    bad_key = _corrupt_first_image(shards[0])

    counts = featurize_dataset(folder, source, batch_size=5)
    assert counts == {"shards": 3, "samples": 23, "skipped": 1, "existing": 0}

    sidecars = sorted(os.listdir(tmp_path / "data" / "regions"))
    assert sidecars == [*(os.path.basename(s) for s in shards), "spec.json"]
    spec = json.loads((tmp_path / "data" / "regions" / "spec.json").read_text())
    assert spec["precomputed"]["feature_dim"] == source.feature_dim
    assert spec["precomputed"]["num_classes"] == len(VOCABULARY)
    assert spec["source"]["type"] == "clip-grid"

    precomputed = PrecomputedRegions(
        source.feature_dim, source.num_classes, max_regions=source.max_regions
    )
    for shard in shards:
        plain = {s.key for s in read_shard(shard).samples}
        merged = read_shard(shard, sidecar_dir="regions").samples
        with_npz = {s.key for s in merged if "npz" in s.files}
        assert with_npz == plain - {bad_key}

    samples = read_shard(shards[1], sidecar_dir="regions").samples[:4]
    fresh = source.encode(source.collate([source.prepare(s) for s in samples]), "cpu")
    stored = precomputed.encode(
        precomputed.collate([precomputed.prepare(s) for s in samples]), "cpu"
    )
    torch.testing.assert_close(stored.features, fresh.features, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(stored.boxes, fresh.boxes)
    assert bool(stored.mask.all())
    assert stored.class_probs is not None and fresh.class_probs is not None
    torch.testing.assert_close(stored.class_probs, fresh.class_probs, atol=1e-5, rtol=1e-4)
    assert torch.equal(stored.labels(), fresh.labels())

    # A rerun (e.g. after a killed job) keeps every committed sidecar.
    mtimes = {s: os.path.getmtime(tmp_path / "data" / "regions" / s) for s in sidecars}
    again = featurize_dataset(folder, source)
    assert again == {"shards": 0, "samples": 0, "skipped": 0, "existing": 3}
    assert mtimes == {s: os.path.getmtime(tmp_path / "data" / "regions" / s) for s in sidecars}
    assert not [n for n in os.listdir(tmp_path / "data" / "regions") if n.startswith(".")]
