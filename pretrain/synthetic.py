"""Tiny parts for tests and benchmarks: a random tiny open_clip model and scene dataset folders.

As open_clip's trainer test runs `main()` on synthetic data, the pretrainer's tests and benches
run the real code on these: a real dataset folder (written by LAIT's own writer) of demo-web
scenes with true captions, and a real (tiny, untrained) open_clip model.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn


def tiny_clip(
    kind: str = "vit", image_size: int = 64, width: int = 32, seed: int = 0
) -> tuple[nn.Module, Callable[[Any], torch.Tensor], Callable[[list[str]], torch.Tensor]]:
    """(model, preprocess, tokenizer) of a randomly initialised open_clip model, ViT or RN."""
    import open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    if kind == "vit":
        vision = CLIPVisionCfg(
            layers=1, width=width, patch_size=16, image_size=image_size, head_width=16
        )
    elif kind == "rn":
        vision = CLIPVisionCfg(layers=(1, 1, 1, 1), width=8, image_size=image_size, head_width=16)
    else:
        raise ValueError(f"kind is 'vit' or 'rn', not {kind!r}")
    text = CLIPTextCfg(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)
    model = CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text)
    preprocess = open_clip.image_transform(image_size, is_train=False)
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=16)
    return model, preprocess, tokenizer


def write_scene_folder(
    folder: str,
    n: int,
    *,
    seed: int = 0,
    samples_per_shard: int = 20,
    source: str = "web",
    image_size: int = 96,
    shuffle_captions: bool = False,
    narratives: str | None = None,
) -> str:
    """Write a LAIT dataset folder of `n` demo-web scenes with their true captions.

    `shuffle_captions` pairs each image with another scene's caption (a noisy, uncurated set).
    `narratives` also writes there the scenes' Localized Narratives (as the demo web makes
    them), whose `image_id`s are the samples' urls.
    """
    from lait.dataset import DatasetWriter
    from lait.demo_web.scenes import describe_scene, random_scene, render_scene
    from lait.record import CaptionSource, Record

    rng = random.Random(seed)
    scenes = [random_scene(rng, image_size, image_size) for _ in range(n)]
    captions = [describe_scene(s, rng) for s in scenes]
    if shuffle_captions:
        rng.shuffle(captions)
    urls = [f"http://127.0.0.1/{source}/{seed}/{i}.jpg" for i in range(n)]
    if narratives is not None:
        import json

        from lait.demo_web.narratives import narrate

        with open(narratives, "w", encoding="utf-8") as handle:
            for scene, url in zip(scenes, urls, strict=True):
                told = narrate(scene, describe_scene(scene, rng), url, random.Random(url))
                handle.write(json.dumps(told) + "\n")
    with DatasetWriter(folder, samples_per_shard=samples_per_shard, overwrite=True) as writer:
        for i, (scene, caption) in enumerate(zip(scenes, captions, strict=True)):
            buffer = io.BytesIO()
            render_scene(scene, texture_seed=seed * 100_003 + i).save(buffer, "JPEG", quality=90)
            image = buffer.getvalue()
            record = Record.candidate(
                source=source,
                url=urls[i],
                caption=caption,
                caption_source=CaptionSource.ALT,
            )
            record = replace(
                record,
                image=image,
                image_format="jpg",
                width=image_size,
                height=image_size,
                num_bytes=len(image),
            )
            writer.write(record.accepted())
    return folder
