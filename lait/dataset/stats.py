"""stats.json: per-stage counts that add up, computed exactly from what is committed.

The counts are read from the committed parquet files (accepted shards and the rejects
ledger), never from in-memory counters, so they describe the folder as it is:

    candidates = accepted + rejected
    funnel[i].out = funnel[i].in - funnel[i].rejected,   funnel[i+1].in = funnel[i].out
    funnel[-1].out = accepted
"""

from __future__ import annotations

import collections
import json
import platform
from collections.abc import Iterator, Sequence
from typing import Any

from lait.dataset import layout, storage
from lait.record import Img2datasetStatus, Record, Stage

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


def compute_stats(folder: str, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stats of a dataset folder, counted from its parquet files (one file at a time)."""
    fs, root = storage.filesystem(folder)
    accepted = 0
    shards = 0
    reasons: collections.Counter[tuple[str, str]] = collections.Counter()
    by_source: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    image_formats: set[str] = set()
    for kind, path in _parquet_paths(fs, root):
        wanted = [*_COUNT_COLUMNS, "image_format"] if kind == "accepted" else _COUNT_COLUMNS
        table = storage.read_parquet(fs, path, wanted)
        columns = table.to_pydict()
        if kind == "accepted":
            shards += 1
            accepted += table.num_rows
            image_formats.update(f for f in columns["image_format"] if f)
        for source, stage, reason in zip(
            columns["source"], columns["reject_stage"], columns["reject_reason"], strict=True
        ):
            by_source[source][kind] += 1
            if kind == "rejected":
                reasons[(stage, reason)] += 1

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
        "shards": shards,
        "image_formats": sorted(image_formats),  # what the dataset card's image columns are
        "funnel": funnel,
        "reasons": dict(sorted((reason, n) for (_, reason), n in reasons.items())),
        "by_source": {
            source: {
                "candidates": c["accepted"] + c["rejected"],
                "accepted": c["accepted"],
                "rejected": c["rejected"],
            }
            for source, c in sorted(by_source.items())
        },
        "run": {"python": platform.python_version(), **(run or {})},
    }


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
