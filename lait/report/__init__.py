"""The dataset quality report: `write_report(DATASET)` writes report.html and report.json.

report.html is one self-contained page (inline CSS, plots and thumbnails as data: URIs, no
scripts, no network) that people audit a dataset with; report.json holds the same figures.
Reading streams over the folder's parquet files, so memory is bounded however large the
dataset (see `lait.report.figures`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import Any

from lait.dataset import storage
from lait.report.figures import ReportData, collect_report_data
from lait.report.html import render_page
from lait.report.thumbnails import read_thumbnails

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"

__all__ = ["REPORT_HTML", "REPORT_JSON", "ReportData", "ReportPaths", "write_report"]


@dataclasses.dataclass(frozen=True)
class ReportPaths:
    """Where a report was written."""

    html: str
    json: str


def write_report(
    dataset: str, out: str | None = None, *, gallery_size: int = 24, seed: int = 0
) -> ReportPaths:
    """Write report.html and report.json for the LAIT dataset folder `dataset`.

    `out` is the folder to write them to (created if needed); by default the dataset folder
    itself. `gallery_size` bounds each gallery; `seed` fixes which samples they show, so the
    same folder and seed give the same report. Raises `DatasetFolderError` if `dataset` is
    not a folder.
    """
    if gallery_size < 1:
        raise ValueError("gallery_size must be at least 1")
    data = collect_report_data(dataset, gallery_size=gallery_size, seed=seed)
    thumbnails = read_thumbnails(dataset, _wanted_images(data))
    if thumbnails.failures:
        data.warnings.append(
            f"{len(thumbnails.failures)} gallery image(s) could not be shown "
            "(each says why in its place): shard tars are missing or damaged."
        )
    page = render_page(data, thumbnails)

    target = dataset if out is None else out
    fs, root = storage.filesystem(target)
    fs.makedirs(root, exist_ok=True)
    paths = ReportPaths(
        html=storage.join(target, REPORT_HTML), json=storage.join(target, REPORT_JSON)
    )
    figures = json.dumps(data.to_dict(), indent=1, ensure_ascii=False, default=str)
    for name, text in ((REPORT_JSON, figures), (REPORT_HTML, page)):
        with storage.atomic_output(fs, storage.join(root, name)) as handle:
            handle.write(text.encode("utf-8"))
    return paths


def _wanted_images(data: ReportData) -> dict[int, set[str]]:
    """{shard id: keys} of every accepted sample a gallery shows."""
    rows: list[dict[str, Any] | None] = [*data.random_accepted, *data.near_threshold]
    rows += [c.survivor for c in data.duplicate_clusters if c.survivor_status == "accepted"]
    for head in data.content_heads.values():
        rows += head["highest_accepted"]
    wanted: dict[int, set[str]] = collections.defaultdict(set)
    for row in rows:
        if row is not None and row.get("shard") is not None:
            wanted[int(row["shard"])].add(str(row["key"]))
    return dict(wanted)
