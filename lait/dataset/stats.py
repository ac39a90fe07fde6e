"""stats.json: per-stage counts that add up, computed exactly from what is committed.

The counts are read from the committed parquet files (accepted shards and the rejects
ledger), never from in-memory counters, so they describe the folder as it is:

    candidates = accepted + rejected
    funnel[i].out = funnel[i].in - funnel[i].rejected,   funnel[i+1].in = funnel[i].out
    funnel[-1].out = accepted
"""

from __future__ import annotations

import collections
import dataclasses
import json
import platform
from collections.abc import Iterator, Sequence
from typing import Any

from lait.dataset import layout, storage
from lait.record import Img2datasetStatus, Record, Stage, face_boxes_of

_COUNT_COLUMNS = ["source", "status", "reject_stage", "reject_reason"]


class StatsMismatchError(ValueError):
    """stats.json does not add up (the folder was edited by hand, or a writer is buggy)."""


def _parquet_paths(fs: Any, folder: str) -> Iterator[tuple[str, str]]:
    """(kind, path) of every committed parquet file: kind is 'accepted' or 'rejected'."""
    for path in sorted(fs.ls(folder, detail=False)):
        if layout.parquet_shard_id(path) is not None:
            yield "accepted", path
    rejects = storage.join(folder, layout.REJECTS_DIR)
    if fs.exists(rejects):
        for path in sorted(fs.ls(rejects, detail=False)):
            if path.endswith(".parquet") and not storage.is_temporary(path):
                yield "rejected", path


@dataclasses.dataclass
class FolderCounts:
    """The counts stats.json is made of, for one committed file or for many merged.

    A job computes one per file as it commits it (from the rows it writes) and merges them
    inside the pipeline, so the launcher never lists or reopens the files; `compute_stats`
    builds the same counts by reading the committed parquet files, which is how
    `lait info` rechecks a folder.
    """

    accepted: int = 0
    reasons: collections.Counter[tuple[str, str]] = dataclasses.field(
        default_factory=collections.Counter
    )
    by_source: dict[str, collections.Counter[str]] = dataclasses.field(default_factory=dict)
    image_formats: set[str] = dataclasses.field(default_factory=set)
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)  # shard tar → samples
    # Face blurring (`image.blur_faces`), over accepted samples: how many were looked at
    # (face_boxes not null), how many had at least one face, and how many boxes in all.
    faces_checked: int = 0
    images_with_faces: int = 0
    face_boxes: int = 0

    @classmethod
    def of_rows(
        cls,
        kind: str,
        sources: Sequence[str],
        stages: Sequence[str | None],
        reasons: Sequence[str | None],
        image_formats: Sequence[str | None] = (),
        shard_id: int | None = None,
        face_boxes: Sequence[Any] = (),
    ) -> FolderCounts:
        """The counts of one file: `kind` 'accepted' (a shard, `shard_id`) or 'rejected'.
        `face_boxes`: each accepted row's boxes (as records or parquet readers give them)."""
        counts = cls()
        if kind == "accepted":
            counts.accepted = len(sources)
            counts.image_formats.update(f for f in image_formats if f)
            for boxes in map(face_boxes_of, face_boxes):
                if boxes is not None:
                    counts.faces_checked += 1
                    counts.images_with_faces += bool(boxes)
                    counts.face_boxes += len(boxes)
            if shard_id is not None:
                counts.sizes[layout.shard_tar_name(shard_id)] = len(sources)
        for source, stage, reason in zip(sources, stages, reasons, strict=True):
            counts.by_source.setdefault(source, collections.Counter())[kind] += 1
            if kind == "rejected":
                counts.reasons[(str(stage), str(reason))] += 1
        return counts

    @classmethod
    def of_records(
        cls, kind: str, records: Sequence[Record], shard_id: int | None = None
    ) -> FolderCounts:
        """The counts of a file holding `records`."""
        return cls.of_rows(
            kind,
            [r.source for r in records],
            [r.reject_stage.value if r.reject_stage else None for r in records],
            [r.reject_reason.value if r.reject_reason else None for r in records],
            [r.image_format for r in records],
            shard_id,
            [r.face_boxes for r in records] if kind == "accepted" else (),
        )

    def merge(self, other: FolderCounts) -> FolderCounts:
        """Add `other` into these counts; returns self."""
        self.accepted += other.accepted
        self.reasons.update(other.reasons)
        for source, counter in other.by_source.items():
            self.by_source.setdefault(source, collections.Counter()).update(counter)
        self.image_formats |= other.image_formats
        self.sizes.update(other.sizes)
        self.faces_checked += other.faces_checked
        self.images_with_faces += other.images_with_faces
        self.face_boxes += other.face_boxes
        return self

    def stats(self, folder: str, run: dict[str, Any] | None = None) -> dict[str, Any]:
        """stats.json's content."""
        reasons = self.reasons
        accepted = self.accepted
        rejected = sum(reasons.values())
        funnel = []
        remaining = accepted + rejected
        for stage in Stage:
            stage_reasons = {r: n for (s, r), n in sorted(reasons.items()) if s == stage.value}
            dropped = sum(stage_reasons.values())
            funnel.append(
                {
                    "stage": stage.value,
                    "in": remaining,
                    "rejected": dropped,
                    "out": remaining - dropped,
                    "reasons": stage_reasons,
                }
            )
            remaining -= dropped
        unknown = {f"{s}/{r}": n for (s, r), n in reasons.items() if s not in set(Stage)}
        if unknown:
            raise StatsMismatchError(f"rejects with unknown stages in {folder}: {unknown}")
        return {
            "candidates": accepted + rejected,
            "accepted": accepted,
            "rejected": rejected,
            "shards": len(self.sizes),
            "image_formats": sorted(self.image_formats),  # the dataset card's image columns
            "funnel": funnel,
            "reasons": dict(sorted((reason, n) for (_, reason), n in reasons.items())),
            "by_source": {
                source: {
                    "candidates": c["accepted"] + c["rejected"],
                    "accepted": c["accepted"],
                    "rejected": c["rejected"],
                }
                for source, c in sorted(self.by_source.items())
            },
            "faces": {
                "images_checked": self.faces_checked,
                "images_with_faces": self.images_with_faces,
                "boxes": self.face_boxes,
            },
            "run": {"python": platform.python_version(), **(run or {})},
        }


def count_folder(folder: str) -> FolderCounts:
    """The counts of a dataset folder, read from its parquet files (one file at a time)."""
    fs, root = storage.filesystem(folder)
    counts = FolderCounts()
    for kind, path in _parquet_paths(fs, root):
        accepted_columns = [*_COUNT_COLUMNS, "image_format", "face_boxes"]
        wanted = accepted_columns if kind == "accepted" else _COUNT_COLUMNS
        columns = storage.read_parquet(fs, path, wanted).to_pydict()
        counts.merge(
            FolderCounts.of_rows(
                kind,
                columns["source"],
                columns["reject_stage"],
                columns["reject_reason"],
                columns.get("image_format", ()),
                layout.parquet_shard_id(path) if kind == "accepted" else None,
                columns.get("face_boxes", ()),
            )
        )
    return counts


def compute_stats(folder: str, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stats of a dataset folder, counted from its parquet files (one file at a time)."""
    return count_folder(folder).stats(folder, run)


def check_stats(stats: dict[str, Any]) -> None:
    """Raise `StatsMismatchError` unless the counts add up as the module docstring says."""
    problems = []
    if stats["accepted"] + stats["rejected"] != stats["candidates"]:
        problems.append("accepted + rejected != candidates")
    remaining = stats["candidates"]
    for step in stats["funnel"]:
        if step["in"] != remaining or step["out"] != step["in"] - step["rejected"]:
            problems.append(f"stage {step['stage']} does not add up")
        if sum(step["reasons"].values()) != step["rejected"]:
            problems.append(f"stage {step['stage']}: reasons do not sum to its rejected count")
        remaining = step["out"]
    if remaining != stats["accepted"]:
        problems.append("the funnel does not end at the accepted count")
    if sum(s["candidates"] for s in stats["by_source"].values()) != stats["candidates"]:
        problems.append("per-source candidates do not sum to the total")
    faces = stats.get("faces")  # absent from folders written before it was counted
    if faces and not (
        faces["images_with_faces"] <= faces["images_checked"] <= stats["accepted"]
        and faces["images_with_faces"] <= faces["boxes"]
    ):
        problems.append("face counts do not fit the accepted samples")
    if problems:
        raise StatsMismatchError("; ".join(problems))


def write_stats(folder: str, stats: dict[str, Any]) -> None:
    """Check and commit stats.json."""
    check_stats(stats)
    fs, root = storage.filesystem(folder)
    with storage.atomic_output(fs, storage.join(root, layout.STATS_FILE)) as out:
        out.write(json.dumps(stats, indent=1, ensure_ascii=False, default=str).encode("utf-8"))


def shard_stats(records: Sequence[Record], start_time: float, end_time: float) -> dict[str, Any]:
    """img2dataset's per-shard stats (`NNNNN_stats.json`) for a shard holding `records`.

    The keys are those img2dataset's writer and logger use. A LAIT shard holds accepted
    samples only (rejects go to the ledger, not to a shard), so `count` is the shard's rows
    and equals `successes`; `status_dict` counts img2dataset statuses, or the error message
    of a row that failed, as img2dataset does. `start_time`, `end_time` (Unix seconds) and
    `duration` time the writer's work on the shard, so they differ between reruns.
    """
    status_dict: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[str | None] = collections.Counter()
    for record in records:
        status = record.img2dataset_status
        statuses[status] += 1
        status_dict[record.error_message or str(status)] += 1
    return {
        "count": len(records),
        "successes": statuses[Img2datasetStatus.SUCCESS.value],
        "failed_to_download": statuses[Img2datasetStatus.FAILED_TO_DOWNLOAD.value],
        "failed_to_resize": statuses[Img2datasetStatus.FAILED_TO_RESIZE.value],
        "duration": end_time - start_time,
        "start_time": start_time,
        "end_time": end_time,
        "status_dict": dict(sorted(status_dict.items())),
    }
