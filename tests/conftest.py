"""Shared fixtures: records with real encoded images, and an offline environment."""

from __future__ import annotations

import io
import os
from collections.abc import Callable

import pytest
from PIL import Image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# No cloud metadata server, ever: google-auth reads these once, on import, so they are set
# before any test module can import it (tests/object_stores.py points GCE's at a closed port).
os.environ.setdefault("NO_GCE_CHECK", "true")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ.setdefault("GCE_METADATA_HOST", "127.0.0.1:9")
os.environ.setdefault("GCE_METADATA_IP", "127.0.0.1:9")

from lait.record import CaptionSource, Record, RejectReason


def jpeg_bytes(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    """A real JPEG of one colour."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def accepted_record(i: int, source: str = "test") -> Record:
    """An accepted record with a real 320x320 JPEG."""
    image = jpeg_bytes(320, 320, (i * 37 % 256, i * 91 % 256, i * 13 % 256))
    candidate = Record.candidate(
        source=source,
        url=f"http://127.0.0.1/img/{i}.jpg",
        caption=f"a picture number {i} with ünïcode",
        caption_source=CaptionSource.ALT,
        page_url="http://127.0.0.1/index.html",
    )
    from dataclasses import replace

    return replace(
        candidate, image=image, image_format="jpg", width=320, height=320, num_bytes=len(image)
    ).accepted()


def rejected_record(i: int, reason: RejectReason, source: str = "test") -> Record:
    """A candidate rejected for `reason`."""
    candidate = Record.candidate(
        source=source,
        url=f"http://127.0.0.1/bad/{i}.jpg",
        caption=f"rejected caption {i}",
        caption_source=CaptionSource.TITLE,
    )
    return candidate.rejected(reason, detail=f"because {i}")


@pytest.fixture
def make_accepted() -> Callable[[int], Record]:
    return accepted_record


@pytest.fixture
def make_rejected() -> Callable[[int, RejectReason], Record]:
    return rejected_record


@pytest.fixture(scope="module")
def one_torch_thread():  # type: ignore[no-untyped-def]
    """One torch thread for a module's tiny models: the machine is shared, and tiny models run
    no faster on more threads. Use with `pytestmark = pytest.mark.usefixtures(...)`."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    """The shipped BERT WordPiece tokenizer the pretrainer uses by default."""
    from pretrain.text import load_tokenizer

    return load_tokenizer()
