"""Read samples from WebDataset shard tars, tolerating damage.

A sample is the consecutive tar members that share a key (`KEY.jpg`, `KEY.txt`, `KEY.json`,
maybe `KEY.npz`). Works for LAIT dataset folders and any img2dataset-style folder. A damaged
member or a truncated tar ends the sample or the shard early and is counted, never raised.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tarfile
from dataclasses import dataclass, field
from typing import Any

import fsspec


class CorruptSampleError(ValueError):
    """A sample lacks a member it needs or a member cannot be decoded (counted, then skipped)."""


@dataclass
class RawSample:
    """A sample's undecoded members by extension (`jpg`, `txt`, `json`, ...)."""

    key: str
    files: dict[str, bytes]
    source: str = ""
    shard: str = ""

    def caption(self) -> str:
        for ext in ("txt", "caption", "text"):
            if ext in self.files:
                return self.files[ext].decode("utf-8").strip()
        raise CorruptSampleError(f"sample {self.key} in {self.shard} has no caption member")

    def image_bytes(self) -> bytes:
        for ext in ("jpg", "jpeg", "png", "webp"):
            if ext in self.files:
                return self.files[ext]
        raise CorruptSampleError(f"sample {self.key} in {self.shard} has no image member")

    @functools.cached_property
    def content_id(self) -> str:
        """A hash of the image bytes: the same wherever the image was crawled from, unlike the
        key, which hashes the URL (host and port included) and the caption. The hold-out split
        uses it, so a recrawl of the same content splits the same way and every caption of a
        held-out image is held out with it. The key when the image member is missing (the
        sample is counted corrupt later)."""
        try:
            return hashlib.sha1(self.image_bytes()).hexdigest()
        except CorruptSampleError:
            return self.key

    def content_order(self) -> tuple[str, bytes]:
        """A sort key that does not depend on the URL: image hash, then caption bytes."""
        return self.content_id, self.files.get("txt", b"")


@dataclass
class ShardRead:
    """The samples of one shard and how many members or samples were damaged."""

    samples: list[RawSample] = field(default_factory=list)
    corrupt: int = 0


def shard_paths(folder: str) -> list[str]:
    """The `*.tar` shards directly in a dataset folder (LAIT or img2dataset layout), sorted."""
    fs, root = fsspec.core.url_to_fs(folder)
    names = sorted(p for p in fs.ls(root, detail=False) if p.endswith(".tar"))
    if not names:
        raise FileNotFoundError(f"no .tar shards in {folder}; point the plan at a dataset folder")
    protocol = folder.split("://", 1)[0] + "://" if "://" in folder else ""
    return [protocol + n if protocol and not n.startswith(protocol) else n for n in names]


def sidecar_path(shard: str, sidecar_dir: str) -> str:
    """`DATASET/regions/00003.tar` beside `DATASET/00003.tar`."""
    head, name = shard.rsplit("/", 1) if "/" in shard else ("", shard)
    return f"{head}/{sidecar_dir}/{name}" if head else os.path.join(sidecar_dir, name)


def read_shard(path: str, source: str = "", sidecar_dir: str | None = None) -> ShardRead:
    """All samples of one shard, with members from a sidecar shard merged in by key."""
    result = _read_tar(path, source)
    if sidecar_dir:
        side = sidecar_path(path, sidecar_dir)
        extra = _read_tar(side, source) if _exists(side) else ShardRead()
        by_key = {s.key: s for s in extra.samples}
        for sample in result.samples:
            if sample.key in by_key:
                sample.files.update(by_key[sample.key].files)
        result.corrupt += extra.corrupt
    return result


def _exists(path: str) -> bool:
    fs, root = fsspec.core.url_to_fs(path)
    return bool(fs.exists(root))


def _read_tar(path: str, source: str) -> ShardRead:
    result = ShardRead()
    members: dict[str, dict[str, bytes]] = {}
    try:
        with fsspec.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                key, dot, ext = base.partition(".")
                if not dot or key.startswith("_"):
                    continue
                data = tar.extractfile(member)
                if data is None:
                    result.corrupt += 1
                    continue
                members.setdefault(key, {})[ext.lower()] = data.read()
    except (tarfile.TarError, EOFError, OSError):
        # A truncated or damaged tar: keep what was read before the damage, count the rest.
        result.corrupt += 1
    result.samples = [RawSample(k, files, source, path) for k, files in members.items()]
    return result


def metadata(sample: RawSample) -> dict[str, Any]:
    """The sample's JSON metadata ({} when it has none or it is unreadable)."""
    import json

    try:
        value = json.loads(sample.files.get("json", b"{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
