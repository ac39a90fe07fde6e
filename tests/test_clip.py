"""The shared CLIP loader, the demo model's weights, scoring and best-caption aggregation."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import random
import sys
from pathlib import Path

import apache_beam as beam
import pytest
import torch

from lait.demo_web import describe_scene, random_scene, render_scene
from lait.models.clip import (
    DEMO_WEIGHTS_PATH,
    ClipLoadError,
    encode_images,
    encode_texts,
    load_clip,
)
from lait.record import CaptionSource, Record, RejectReason, Status
from pipeline.clip import (
    DEMO_CLIP_MODEL,
    KNOWN_MIN_SCORES,
    BestCaptionPerImage,
    ClipConfig,
    ClipScore,
    best_caption_of_image,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.filter_quality import beam_pipeline, collect


def test_demo_weights_are_small_and_load_offline() -> None:
    assert DEMO_WEIGHTS_PATH.stat().st_size < 5_000_000
    clip = load_clip()
    assert clip.embed_dim == 64 and not clip.model.training


def test_real_model_names_need_weights_and_fail_fast_offline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ClipLoadError, match="needs pretrained weights"):
        load_clip("ViT-B-32")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ClipLoadError, match="HF_HUB_OFFLINE"):
        load_clip("ViT-B-32", "laion2b_s34b_b79k")
    with pytest.raises(ValueError, match="model-specific"):
        ClipConfig(model="ViT-L-14")


def _scene_record(i: int, rng: random.Random, *, true: bool = True) -> Record:
    scene = random_scene(rng, 400, 360)
    caption = describe_scene(scene if true else random_scene(rng, 400, 360), rng)
    buffer = io.BytesIO()
    render_scene(scene, texture_seed=i).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    record = Record.candidate(
        source="t", url=f"http://h/{i}.jpg", caption=caption, caption_source=CaptionSource.ALT
    )
    return dataclasses.replace(
        record, image=data, image_format="jpg", sha256=hashlib.sha256(data).hexdigest()
    )


def test_embeddings_are_normalised_deterministic_and_separate_captions() -> None:
    clip = load_clip()
    rng = random.Random("test-clip")
    scene = random_scene(rng, 400, 400)
    image = render_scene(scene)
    texts = [describe_scene(scene, rng), describe_scene(random_scene(rng), rng)]
    first = encode_images(clip, [image, image])
    assert torch.allclose(first.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.equal(first, encode_images(clip, [image, image]))
    scores = (encode_texts(clip, texts) @ first[0]).tolist()
    assert scores[0] > KNOWN_MIN_SCORES[DEMO_CLIP_MODEL] > scores[1]


def test_transform_scores_rejects_and_keeps_best_caption_per_image() -> None:
    rng = random.Random("test-clip-transform")
    good = [_scene_record(i, rng) for i in range(6)]
    bad = [_scene_record(100 + i, rng, true=False) for i in range(4)]
    # The same image with a second, wrong caption: LAIT keeps the better one.
    twin = dataclasses.replace(bad[0], key="twin", caption=good[0].caption)
    twin = dataclasses.replace(twin, image=good[0].image, sha256=good[0].sha256)
    not_downloaded = dataclasses.replace(good[1], key="nodl", image=None, sha256=None)
    records = [*good, *bad, twin, not_downloaded]
    runs = []
    for _ in range(2):
        with collect() as results:
            with beam_pipeline() as pipeline:
                results.add(
                    pipeline
                    | beam.Create(records)
                    | ClipScore(ClipConfig(model=DEMO_CLIP_MODEL))
                    | BestCaptionPerImage()
                )
            runs.append(results.read())
    assert [(r.key, r.clip_score, r.reject_reason) for r in runs[0]] == [
        (r.key, r.clip_score, r.reject_reason) for r in runs[1]
    ]  # reruns agree
    out = {r.key: r for r in runs[0]}
    assert all(out[r.key].status is Status.CANDIDATE for r in good[1:])
    assert all(out[r.key].reject_reason is RejectReason.LOW_CLIP_SCORE for r in bad[1:])
    # Same bytes, same caption, same score: the smaller key is kept, the other points at it.
    kept, dropped = sorted([out[good[0].key], out["twin"]], key=lambda r: r.key)
    assert kept.status is Status.CANDIDATE
    assert dropped.reject_reason is RejectReason.NOT_BEST_CAPTION
    assert dropped.duplicate_of == kept.key
    assert out["nodl"].clip_score is None and out["nodl"].status is Status.CANDIDATE


def test_best_caption_prefers_the_highest_score() -> None:
    base = Record.candidate(source="t", url="u", caption="c", caption_source=CaptionSource.ALT)
    a = dataclasses.replace(base, key="a", clip_score=0.5, sha256="x")
    b = dataclasses.replace(base, key="b", clip_score=0.9, sha256="x")
    kept, dropped = best_caption_of_image([a, b])
    assert kept.key == "b" and dropped.duplicate_of == "b"
