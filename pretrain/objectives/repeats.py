"""Which in-batch pairs are not real negatives: the same image, or the same caption, twice.

A web batch repeats content: one image under several captions (every caption of an image is a
sample), one caption on several images (a stock alt text). Pairing caption i with image j is a
false negative when image j is image i's, or caption j is caption i's; ITC must not push such
pairs apart and ITM must not label them "unmatched". Rows carry two int64 ids for this: the
image's (a hash of its bytes, `RawSample.content_id`) and the caption's (a hash of its text).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch


def stable_id(value: str) -> int:
    """A signed 64-bit id of a string, the same in every process and run."""
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def caption_ids(captions: Sequence[str]) -> np.ndarray:
    """Ids of captions, equal for captions equal up to case and spacing."""
    return np.array([stable_id(" ".join(c.lower().split())) for c in captions], dtype=np.int64)


def image_ids(content_ids: Sequence[str]) -> np.ndarray:
    """Ids of images from their content ids (hashes of the image bytes)."""
    return np.array([stable_id(c) for c in content_ids], dtype=np.int64)


def interchangeable(
    image_a: torch.Tensor, caption_a: torch.Tensor, image_b: torch.Tensor, caption_b: torch.Tensor
) -> torch.Tensor:
    """len(a) x len(b): row i of a and row j of b share their image or their caption, so
    caption i with image j (and caption j with image i) is a true pair, never a negative."""
    return (image_a[:, None] == image_b[None, :]) | (caption_a[:, None] == caption_b[None, :])


def interchangeable_np(images: np.ndarray, captions: np.ndarray) -> np.ndarray:
    """`interchangeable` of a batch with itself, in NumPy (for the collator)."""
    return (images[:, None] == images[None, :]) | (captions[:, None] == captions[None, :])
