"""Pre-training batches from dataset folders: shuffled, endless, mixed by weights, resumable.

Each data-loader worker of each rank is one *stream*. A stream walks its sources' shards epoch
by epoch (shard order and in-shard order reshuffled every epoch from the seed), picks the
source of each sample by the mixing weights, prepares regions, and collates whole batches, so a
batch comes from one worker. Every batch carries the stream's position after it (`data_state`):
the trainer keeps the latest per worker in its checkpoint and a resumed run continues each
stream exactly where it stopped, without re-reading what it consumed.

Samples are held out for evaluation by a hash of their image bytes (`holdout`), so training
and evaluation agree on the split without any list of keys, every caption of a held-out image
is held out with it, and a recrawl of the same content (the demo web on another port) splits
the same way: the URL plays no part.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pretrain.narratives import Narrative, NarrativeIndex, token_targets
from pretrain.objectives import itm, mlm, repeats
from pretrain.regions.base import RegionSource
from pretrain.shards import CorruptSampleError, RawSample, read_shard, shard_paths


class DataError(ValueError):
    """The plan's data cannot produce batches (no shards, nothing left after the hold-out)."""


@dataclass(frozen=True)
class SourceSpec:
    """One dataset folder in a stage's mix, with its sampling weight, and optionally a
    Localized Narratives JSONL whose captions and word points its samples train on."""

    path: str
    weight: float = 1.0
    narratives: str | None = None


def held_out(content_id: str, fraction: float) -> bool:
    """Whether a sample is in the evaluation split (a stable hash of its `content_id`)."""
    if fraction <= 0:
        return False
    digest = hashlib.sha1(content_id.encode("utf-8")).digest()
    value = int.from_bytes(digest[:4], "big") / 2**32
    return value < fraction


# ---------------------------------------------------------------------------------------------
# Collation: tokenise, pair for ITM, mask for MLM, pad.


@dataclass(frozen=True)
class CollatorConfig:
    max_text_len: int = 40
    mlm_probability: float = 0.15
    whole_word_masking: bool = False
    itm_swap: str = "both"  # negatives by swapping captions, images, or either
    with_negatives: bool = True


class PretrainCollator:
    """Turns prepared samples into one batch of B matched samples and their ITM rows.

    The masked rows (`input_ids`, `mlm_labels`: B, MLM-masked) are for MLM, MOC and MRFR; the
    clean rows (`itm_input_ids`: B matched, then B in-batch negatives, unmasked; each row's
    image is `image_index`) are for ITM; `itc_input_ids` (B, unmasked) for ITC. `image_ids`
    and `caption_ids` identify each sample's image and caption, so a repeat in the batch is
    never drawn as a negative (a row with no other content gets ITM label IGNORE).
    """

    def __init__(self, tokenizer: Any, region_source: RegionSource, config: CollatorConfig) -> None:
        self.tokenizer = tokenizer
        self.region_source = region_source
        self.config = config

    def __call__(
        self, items: Sequence[tuple[Any, ...]], rng: np.random.Generator
    ) -> dict[str, Any]:
        """`items` are (key, caption, prepared regions[, content id]) per sample; without a
        content id the key stands for the image."""
        keys = [item[0] for item in items]
        captions = [item[1] for item in items]
        regions = self.region_source.collate([item[2] for item in items])
        content = [item[3] if len(item) > 3 else item[0] for item in items]
        image_ids, caption_ids = repeats.image_ids(content), repeats.caption_ids(captions)
        enc = self.tokenizer(
            captions,
            max_length=self.config.max_text_len,
            truncation=True,
            padding="longest",
            return_special_tokens_mask=True,
            return_tensors="np",
        )
        ids, attention = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
        special = enc["special_tokens_mask"].astype(bool) | (attention == 0)
        n = len(items)
        caption_rows, image_rows = np.arange(n), np.arange(n)
        itm_labels = np.ones(n, dtype=np.int64)
        if self.config.with_negatives:
            repeat = repeats.interchangeable_np(image_ids, caption_ids)
            neg_caption, neg_image, valid = itm.negative_pairs(n, rng, self.config.itm_swap, repeat)
            caption_rows = np.concatenate([caption_rows, neg_caption])
            image_rows = np.concatenate([image_rows, neg_image])
            itm_labels = np.concatenate([itm_labels, np.where(valid, 0, itm.IGNORE)])
        word_ids = None
        if self.config.whole_word_masking:
            word_ids = [enc.word_ids(i) for i in range(n)]
        masked, labels = mlm.mask_tokens(
            ids,
            special,
            rng,
            mask_token_id=self.tokenizer.mask_token_id,
            vocab_size=len(self.tokenizer),
            probability=self.config.mlm_probability,
            word_ids=word_ids,
        )
        return {
            "keys": keys,
            "captions": captions,
            "regions": regions,
            "input_ids": torch.from_numpy(masked),
            "attention_mask": torch.from_numpy(attention),
            "mlm_labels": torch.from_numpy(labels),
            "positive": torch.ones(n, dtype=torch.bool),
            "itm_input_ids": torch.from_numpy(ids[caption_rows]),
            "itm_attention_mask": torch.from_numpy(attention[caption_rows]),
            "itm_labels": torch.from_numpy(itm_labels),
            "caption_index": torch.from_numpy(caption_rows),
            "image_index": torch.from_numpy(image_rows),
            "itc_input_ids": torch.from_numpy(ids),
            "itc_attention_mask": torch.from_numpy(attention),
            "image_ids": torch.from_numpy(image_ids),
            "caption_ids": torch.from_numpy(caption_ids),
        }


# ---------------------------------------------------------------------------------------------
# Streams.


def _fresh_state(num_sources: int, seed: int, stream_id: int) -> dict[str, Any]:
    rng = np.random.Generator(np.random.PCG64([seed, stream_id, 0x1A17]))
    return {
        "rng": rng.bit_generator.state,
        "cursors": [{"epoch": 0, "shard": 0, "offset": 0} for _ in range(num_sources)],
        "batches": 0,
    }


class _SourceCursor:
    """Walks one source for one stream: epoch → this stream's shards → its samples."""

    def __init__(
        self,
        index: int,
        shards: list[str],
        seed: int,
        stream_id: int,
        num_streams: int,
        holdout: float,
        split: str,
        sidecar_dir: str | None,
        cursor: dict[str, int],
    ) -> None:
        self.index, self.shards, self.seed = index, shards, seed
        self.stream_id, self.num_streams = stream_id, num_streams
        self.holdout, self.split, self.sidecar_dir = holdout, split, sidecar_dir
        self.cursor = cursor
        self.corrupt = 0
        self._loaded: tuple[tuple[int, int], list[RawSample]] | None = None

    def _epoch_shards(self, epoch: int) -> list[tuple[str, bool]]:
        """(shard, split_by_sample) for this stream in this epoch."""
        order = np.random.default_rng([self.seed, self.index, epoch]).permutation(len(self.shards))
        if len(self.shards) >= self.num_streams:
            return [(self.shards[i], False) for i in order[self.stream_id :: self.num_streams]]
        # Fewer shards than streams: every stream reads every shard and takes its share.
        return [(self.shards[i], True) for i in order]

    def _samples(self, epoch: int, position: int) -> list[RawSample]:
        if self._loaded is not None and self._loaded[0] == (epoch, position):
            return self._loaded[1]
        path, split_by_sample = self._epoch_shards(epoch)[position]
        read = read_shard(path, sidecar_dir=self.sidecar_dir)
        self.corrupt += read.corrupt
        samples = sorted(read.samples, key=RawSample.content_order)
        order = np.random.default_rng([self.seed, self.index, epoch, position]).permutation(
            len(samples)
        )
        samples = [samples[i] for i in order]
        if split_by_sample:
            samples = samples[self.stream_id :: self.num_streams]
        keep_held_out = self.split == "eval"
        samples = [s for s in samples if held_out(s.content_id, self.holdout) == keep_held_out]
        self._loaded = ((epoch, position), samples)
        return samples

    def next(self) -> RawSample:
        empty_epochs = 0
        while True:
            c = self.cursor
            shards = self._epoch_shards(c["epoch"])
            if c["shard"] >= len(shards):
                c["epoch"], c["shard"], c["offset"] = c["epoch"] + 1, 0, 0
                empty_epochs += 1
                if empty_epochs > 1:
                    raise DataError(
                        f"source {self.index} gives this stream no samples (shards: "
                        f"{len(self.shards)}, hold-out {self.holdout}); add data or lower the "
                        "number of workers/ranks"
                    )
                continue
            samples = self._samples(c["epoch"], c["shard"])
            if c["offset"] < len(samples):
                c["offset"] += 1
                return samples[c["offset"] - 1]
            c["shard"], c["offset"] = c["shard"] + 1, 0


class PretrainStream(IterableDataset[dict[str, Any]]):
    """Endless collated batches from weighted sources; see the module docstring."""

    def __init__(
        self,
        sources: Sequence[SourceSpec],
        region_source: RegionSource,
        collator: PretrainCollator,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        holdout: float = 0.0,
        start_states: dict[int, dict[str, Any]] | None = None,
        worker_offset: int = 0,
    ) -> None:
        if not sources:
            raise DataError("a stage needs at least one source")
        self.sources = list(sources)
        self.shards = [shard_paths(s.path) for s in self.sources]
        weights = np.array([s.weight for s in self.sources], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise DataError(f"mixing weights must be >= 0 and not all 0, got {weights.tolist()}")
        self.weights = weights / weights.sum()
        self.region_source, self.collator = region_source, collator
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size, self.holdout = rank, world_size, holdout
        self.start_states = start_states or {}
        self.worker_offset = worker_offset
        self.narratives = [
            NarrativeIndex.load(s.narratives) if s.narratives else None for s in self.sources
        ]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers = info.num_workers if info else 1
        logical = ((info.id if info else 0) + self.worker_offset) % workers
        stream_id = self.rank * workers + logical
        state = copy.deepcopy(self.start_states.get(logical)) or _fresh_state(
            len(self.sources), self.seed, stream_id
        )
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = state["rng"]
        cursors = [
            _SourceCursor(
                i,
                shards,
                self.seed,
                stream_id,
                self.world_size * workers,
                self.holdout,
                "train",
                self.region_source.sidecar_dir,
                state["cursors"][i],
            )
            for i, shards in enumerate(self.shards)
        ]
        corrupt_seen = 0
        while True:
            items: list[tuple[str, str, dict[str, Any], str]] = []
            narrated: list[Narrative | None] = []
            while len(items) < self.batch_size:
                source = int(rng.choice(len(cursors), p=self.weights))
                sample = cursors[source].next()
                index = self.narratives[source]
                narrative = index.find(sample) if index is not None else None
                try:
                    caption = narrative.caption if narrative else sample.caption()
                    prepared = self.region_source.prepare(sample)
                    items.append((sample.key, caption, prepared, sample.content_id))
                    narrated.append(narrative)
                except (CorruptSampleError, UnicodeDecodeError):
                    corrupt_seen += 1
            batch = self.collator(items, rng)
            if any(index is not None for index in self.narratives):
                batch.update(self._grounding_targets(batch, narrated))
            state["rng"] = rng.bit_generator.state
            state["batches"] += 1
            corrupt_total = corrupt_seen + sum(c.corrupt for c in cursors)
            batch["corrupt"] = corrupt_total - state.get("corrupt", 0)
            state["corrupt"] = corrupt_total
            batch["data_state"] = {"worker": logical, "state": copy.deepcopy(state)}
            yield batch

    def _grounding_targets(
        self, batch: dict[str, Any], narrated: list[Narrative | None]
    ) -> dict[str, torch.Tensor]:
        """Per caption (B x L): each token's point from its word's narrative trace, and a mask."""
        targets = token_targets(
            self.collator.tokenizer,
            batch["captions"],
            narrated,
            self.collator.config.max_text_len,
            length=batch["itc_input_ids"].shape[1],
        )
        return {
            "grounding_points": torch.from_numpy(targets["points"]),
            "grounding_mask": torch.from_numpy(targets["mask"]),
        }


def make_loader(stream: PretrainStream, num_workers: int, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over whole batches (the stream collates them itself)."""
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def iter_held_out(
    folders: Sequence[str], fraction: float, sidecar_dir: str | None = None
) -> Iterator[RawSample]:
    """The held-out samples of folders, in a fixed order (folder, shard, content)."""
    for folder in folders:
        for path in shard_paths(folder):
            read = read_shard(path, sidecar_dir=sidecar_dir)
            for sample in sorted(read.samples, key=RawSample.content_order):
                if fraction >= 1.0 or held_out(sample.content_id, fraction):
                    yield sample
