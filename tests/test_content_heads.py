"""Content heads on the CLIP image embedding: loaded by path, rejecting above their threshold,
one embedding per distinct image, one model per process, and never a demo head by default."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import random
import sys
import types
from pathlib import Path

import apache_beam as beam
import pytest
import torch
from apache_beam.metrics.metric import MetricsFilter

from lait.demo_web import describe_scene, random_scene, render_scene
from lait.models.clip import encode_images, load_clip
from lait.models.content import ContentHeadError, load_content_head, save_content_head
from lait.record import CaptionSource, Record, RejectReason, Status
from pipeline.clip import (
    DEMO_CLIP_MODEL,
    ClipConfig,
    ClipScore,
    ContentHeadConfig,
)
from pipeline.clip.scorer import ScoreWithClip
from pipeline.config import load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.filter_quality import Collected, beam_pipeline


def _image(i: int, rng: random.Random) -> tuple[bytes, str]:
    scene = random_scene(rng, 400, 360)
    buffer = io.BytesIO()
    render_scene(scene, texture_seed=i).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), describe_scene(scene, rng)


def _record(key: str, data: bytes, caption: str) -> Record:
    record = Record.candidate(
        source="t", url=f"http://h/{key}.jpg", caption=caption, caption_source=CaptionSource.ALT
    )
    return dataclasses.replace(
        record, key=key, image=data, image_format="jpg", sha256=hashlib.sha256(data).hexdigest()
    )


def _tiny_head(path: Path, target: torch.Tensor, signal: str = "unsafe") -> Path:
    """A linear head that fires only near `target` (cosine > 0.99 gives p > 0.5)."""
    weight = (40.0 * target).reshape(1, -1)
    bias = torch.tensor([-40.0 * 0.99])
    save_content_head(path, [(weight, bias)], signal=signal, clip_model=DEMO_CLIP_MODEL)
    return path


def _run(records: list[Record], config: ClipConfig, tmp_path: Path) -> tuple[list[Record], int]:
    folder = tmp_path / f"out{random.random()}"
    folder.mkdir()
    collected = Collected(str(folder))
    pipeline = beam_pipeline()
    collected.add(pipeline | beam.Create(records, reshuffle=False) | ClipScore(config))
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("clip.images_embedded"))
    embedded = sum(c.committed for c in counters["counters"])
    return collected.read(), embedded


def test_unsafe_head_given_by_path_rejects_above_its_threshold(tmp_path: Path) -> None:
    rng = random.Random("content-heads")
    images = [_image(i, rng) for i in range(5)]
    clip = load_clip()
    from PIL import Image

    target = encode_images(clip, [Image.open(io.BytesIO(images[0][0])).convert("RGB")])[0]
    head = _tiny_head(tmp_path / "unsafe.safetensors", target)
    loaded = load_content_head(str(head))
    assert loaded.signal == "unsafe" and head.stat().st_size < 2_000

    # The flagged image under two captions (one URL's captions arrive together), the others
    # once each, and a record that was never downloaded.
    flagged = [_record("u0", *images[0]), _record("u0b", images[0][0], "a small red circle")]
    others = [_record(f"k{i}", *images[i]) for i in range(1, 5)]
    missing = dataclasses.replace(_record("none", *images[1]), image=None, sha256=None)
    records = [*flagged, *others, missing]
    config = ClipConfig(
        model=DEMO_CLIP_MODEL,
        min_score=-1.0,  # no CLIP-score rejects: only the head decides here
        unsafe=ContentHeadConfig(head=str(head), threshold=0.5),
    )
    out, embedded = _run(records, config, tmp_path)
    assert len(out) == len(records)  # nothing lost
    by_key = {r.key: r for r in out}
    for record in flagged:
        got = by_key[record.key]
        assert got.reject_reason is RejectReason.UNSAFE_IMAGE, got
        assert got.p_unsafe is not None and got.p_unsafe > 0.5 == got.reject_limit
        assert got.reject_value == got.p_unsafe and got.clip_score is not None
    for record in others:
        got = by_key[record.key]
        assert got.status is Status.CANDIDATE and got.p_unsafe is not None and got.p_unsafe < 0.5
        assert got.p_nonnatural is None and got.p_watermark is None  # those heads are off
    assert by_key["none"].p_unsafe is None and by_key["none"].status is Status.CANDIDATE
    # Five distinct images: the flagged one was embedded once for its two captions.
    assert embedded == 5

    # The same head recording only (LAION's punsafe): probabilities, no reject.
    record_only = dataclasses.replace(
        config, unsafe=ContentHeadConfig(head=str(head), threshold=0.5, reject=False)
    )
    out, _ = _run(records, record_only, tmp_path)
    assert all(r.status is Status.CANDIDATE for r in out)
    assert {r.key for r in out if (r.p_unsafe or 0) > 0.5} == {"u0", "u0b"}


def test_staged_images_are_read_by_reference_once_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records that carry `image_ref` instead of bytes are read through
    `pipeline.staging.read_staged`, one read per distinct reference."""
    rng = random.Random("staged")
    reads: list[str] = []

    def read_staged(ref: str) -> bytes:
        reads.append(ref)
        return Path(ref).read_bytes()

    try:
        import pipeline.staging as staging  # the download stage's module, once it exists

        monkeypatch.setattr(staging, "read_staged", read_staged)
    except ImportError:
        stub = types.ModuleType("pipeline.staging")
        stub.read_staged = read_staged  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "pipeline.staging", stub)
    records = []
    for i in range(3):
        data, caption = _image(i, rng)
        path = tmp_path / f"img{i}.jpg"
        path.write_bytes(data)
        for j in range(2):  # two captions of each image
            staged = dataclasses.replace(
                _record(f"s{i}{j}", data, caption if j == 0 else "a large blue square"),
                image=None,
                image_ref=str(path),
            )
            records.append(staged)
    out, embedded = _run(records, ClipConfig(model=DEMO_CLIP_MODEL, min_score=-1.0), tmp_path)
    assert len(out) == 6 and all(r.clip_score is not None for r in out)
    assert embedded == 3 and sorted(set(reads)) == sorted(
        str(tmp_path / f"img{i}.jpg") for i in range(3)
    )
    score = {r.key: float(r.clip_score or 0.0) for r in out}  # none is None (asserted above)
    assert all(score[f"s{i}0"] > score[f"s{i}1"] for i in range(3))


def test_heads_are_off_by_default_and_a_demo_head_refuses_another_model(tmp_path: Path) -> None:
    assert ClipConfig(model="ViT-B-32").content_heads() == {}
    config = load_config(None, {"clip.model": "ViT-B-32"})
    assert config.clip.content_heads() == {}
    with pytest.raises(ContentHeadError, match="lait-demo-clip"):
        ClipScore(
            ClipConfig(
                model="ViT-B-32",
                pretrained="/models/b32.pt",
                watermark=ContentHeadConfig(head="lait-demo-watermark"),
            )
        )
    with pytest.raises(ContentHeadError, match="not found"):
        ClipScore(ClipConfig(model=DEMO_CLIP_MODEL, unsafe=ContentHeadConfig(head="/no/such")))
    head = _tiny_head(tmp_path / "w.safetensors", torch.ones(64) / 8, signal="watermark")
    with pytest.raises(ValueError, match="watermark"):  # a watermark head in the unsafe slot
        ClipScore(ClipConfig(model=DEMO_CLIP_MODEL, unsafe=ContentHeadConfig(head=str(head))))
    # From YAML/--set, as a user gives a head by path.
    loaded = load_config(
        None,
        {
            "clip.model": DEMO_CLIP_MODEL,
            "clip.unsafe.head": str(head),
            "clip.unsafe.threshold": 0.7,
        },
    )
    assert loaded.clip.content_heads()["unsafe"] == ContentHeadConfig(head=str(head), threshold=0.7)


def test_one_model_per_process_and_the_accelerator_hint() -> None:
    config = ClipConfig(model=DEMO_CLIP_MODEL, nonnatural=ContentHeadConfig("lait-demo-nonnatural"))
    dofn = ScoreWithClip(config)
    first, second = (pickle.loads(pickle.dumps(dofn)) for _ in range(2))  # two workers' copies
    first.setup()
    second.setup()
    assert first.clip is second.clip and first.model.heads["nonnatural"] is not None

    def scoring_hints(clip: ClipConfig) -> dict[str, bytes]:
        pipeline = beam.Pipeline()
        _ = pipeline | beam.Create([]) | ClipScore(clip)
        proto = pipeline.to_runner_api()
        (scoring,) = [
            t
            for t in proto.components.transforms.values()
            if t.unique_name.endswith("Score/ParDo(ScoreWithClip)")
        ]
        return dict(proto.components.environments[scoring.environment_id].resource_hints)

    accelerator = "type:nvidia-tesla-t4;count:1;install-nvidia-driver"
    hinted = dataclasses.replace(config, device="cuda", accelerator=accelerator)
    assert scoring_hints(hinted) == {"beam:resources:accelerator:v1": accelerator.encode()}
    assert scoring_hints(config) == {}  # no hint unless the config asks


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message is for machines without a GPU")
def test_cuda_without_a_gpu_says_what_to_do() -> None:
    dofn = ScoreWithClip(ClipConfig(model=DEMO_CLIP_MODEL, device="cuda"))
    with pytest.raises(RuntimeError, match=r"clip\.device=cpu"):
        dofn.setup()


def test_demo_crawl_with_the_demo_heads_loses_nothing(tmp_path: Path) -> None:
    """The crawl with `lait demo`'s CLIP settings and face blurring: the content rejects are
    in the ledger with their reasons, accepted + rejected = candidates, and stats.json counts
    the faces the job looked for (none on shapes)."""
    from lait.dataset import DatasetFolder, check_stats
    from lait.demo_web import DemoWebServer, NoiseKind, build_site
    from pipeline.clip import demo_clip_config
    from pipeline.config import OutputConfig, PipelineConfig, SourcesConfig
    from pipeline.fetch import FetchConfig
    from pipeline.image import ImageConfig
    from pipeline.run import run_pipeline

    site = build_site(seed=21, n_images=120, slow_delay_s=0.5, n_slow=1)
    with DemoWebServer(site) as server:
        config = PipelineConfig(
            sources=SourcesConfig(pages=(server.index_url,), depth=1),
            fetch=FetchConfig(allowed_networks=("127.0.0.1/32",), total_timeout_s=0.3, retries=0),
            image=ImageConfig(blur_faces=True),
            clip=demo_clip_config(),
            output=OutputConfig(folder=str(tmp_path / "web")),
        )
        stats = run_pipeline(config, ["--direct_running_mode=in_memory"], show_progress=False)
        base = server.base_url
    check_stats(stats)
    assert stats["accepted"] + stats["rejected"] == stats["candidates"]
    folder = DatasetFolder(tmp_path / "web")
    ledger = folder.rejects(["url", "reject_reason"]).to_pylist()
    outcome = {row["url"]: row["reject_reason"] for row in ledger}
    noise_of_url = {base + ref.url: ref.noise for ref in site.ground_truth.references}
    accepted = folder.metadata(["url", "p_nonnatural", "p_watermark"]).to_pylist()
    outcome.update({row["url"]: "accepted" for row in accepted})
    assert all(r["p_nonnatural"] is not None and r["p_watermark"] is not None for r in accepted)
    for kind, reason in (
        (NoiseKind.NON_NATURAL_IMAGE, "nonnatural_image"),
        (NoiseKind.WATERMARKED_IMAGE, "watermarked_image"),
    ):
        refs = site.ground_truth.with_noise(kind)
        caught = sum(outcome.get(base + ref.url) == reason for ref in refs)
        assert refs and caught >= len(refs) - 1, (kind, caught, len(refs), stats["reasons"])
        wrong = {
            row["url"]
            for row in ledger
            if row["reject_reason"] == reason and kind not in noise_of_url.get(row["url"], ())
        }
        assert len(wrong) <= 1, (kind, wrong)
    # The job's own face counts: every accepted image was looked at, and shapes are no faces.
    assert stats["faces"] == {
        "images_checked": stats["accepted"],
        "images_with_faces": 0,
        "boxes": 0,
    }
