"""Every figure the report shows, computed by streaming over a dataset folder's parquet files.

The parquet files are read in batches of `BATCH_ROWS` rows with only the columns needed, so
memory depends on the batch size and the gallery size, not on the size of the dataset:
counts are exact (from parquet), distributions are fixed-bin histograms, galleries are
seeded reservoir samples. `collect_report_data` returns a `ReportData`; its `to_dict()` is
what report.json holds, and the HTML page is rendered from the same object.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import platform
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

import lait
from lait.dataset import DatasetFolder, DatasetFolderError, layout, storage
from lait.record import RejectReason, Stage, face_boxes_of
from lait.report.streaming import CategoryCounter, Histogram, Reservoir, SmallestK

BATCH_ROWS = 8192
MAX_TEXT_CHARS = 400  # crawled text longer than this is cut in galleries (counts are unaffected)
MAX_DUPLICATES_SHOWN = 6
TOP_DOMAINS = 25

# Columns the galleries show; every scan reads these and nothing else it does not need.
GALLERY_COLUMNS = [
    "key",
    "source",
    "url",
    "page_url",
    "caption",
    "caption_source",
    "width",
    "height",
    "num_bytes",
    "language",
    "language_score",
    "clip_score",
    "p_nonnatural",
    "p_unsafe",
    "p_watermark",
    "face_boxes",
]
REJECT_COLUMNS = [
    *GALLERY_COLUMNS,
    "reject_stage",
    "reject_reason",
    "reject_detail",
    "duplicate_of",
    # what the rejecting check measured and the bound it met (a pair's Hamming bits or
    # cosine and the threshold, for a duplicate)
    "reject_value",
    "reject_limit",
]

# The content heads on the CLIP image embedding: signal -> (probability column, its reject).
CONTENT_HEADS: dict[str, tuple[str, RejectReason]] = {
    "nonnatural": ("p_nonnatural", RejectReason.NONNATURAL_IMAGE),
    "unsafe": ("p_unsafe", RejectReason.UNSAFE_IMAGE),
    "watermark": ("p_watermark", RejectReason.WATERMARKED_IMAGE),
}

# Reasons grouped for the opt-out and safety section, in the order the page lists them.
OPT_OUT_REASONS = (
    RejectReason.X_ROBOTS_TAG_OPT_OUT,
    RejectReason.META_ROBOTS_OPT_OUT,
    RejectReason.ROBOTS_TXT_DISALLOWED,
)
SAFETY_REASONS = (
    RejectReason.BLOCKED_ADDRESS,
    RejectReason.OVER_HOST_BUDGET,
    RejectReason.UNSUPPORTED_SCHEME,
    RejectReason.TOO_MANY_BYTES,
    RejectReason.TOO_MANY_REDIRECTS,
    RejectReason.REDIRECT_LOOP,
    RejectReason.TIMEOUT,
    RejectReason.DECOMPRESSION_BOMB,
)

# scheme://[user@]host — the host, bracketed for IPv6.
_HOST_PATTERN = r"^[A-Za-z][A-Za-z0-9+.\-]*://(?:[^@/?#]*@)?(?P<host>\[[^\]]*\]|[^/:?#]+)"
_NO_HOST = "(no host)"
_NO_LANGUAGE = "(not identified)"


def _new_histograms() -> dict[str, Histogram]:
    """The fixed bins of every distribution (wide enough for any scale a stage may use)."""
    return {
        "clip_score": Histogram.linear(-1.0, 1.0, 400),
        "caption_length": Histogram.linear(0, 400, 80),
        "width": Histogram.linear(0, 4096, 128),
        "height": Histogram.linear(0, 4096, 128),
        "aspect_ratio": Histogram.logarithmic(1 / 8, 8, 60),
        "num_bytes": Histogram.logarithmic(64, 64 * 2**20, 60),
        "language_score": Histogram.linear(0, 1, 50),
    }


@dataclasses.dataclass
class DuplicateCluster:
    """A survivor and (some of) the rejected records that named it in `duplicate_of`."""

    survivor_key: str
    survivor: dict[str, Any] | None  # its row; None if the survivor is in no parquet file
    survivor_status: str  # "accepted", "rejected" or "missing"
    duplicates: list[dict[str, Any]]
    total_duplicates: int


@dataclasses.dataclass
class ReportData:
    """All figures of one report. `to_dict()` is report.json; the page renders from this."""

    dataset: str
    parameters: dict[str, Any]
    generated_by: dict[str, str]
    candidates: int
    accepted: int
    rejected: int
    shards: int
    funnel: list[dict[str, Any]]
    reasons: dict[str, int]
    by_source: dict[str, dict[str, int]]
    run: dict[str, Any]
    clip_threshold: float | None
    stats_json: str  # "matches", "differs" or "missing"
    warnings: list[str]
    # Distributions: histogram name -> {"accepted": Histogram, "rejected": Histogram}
    distributions: dict[str, dict[str, Histogram]]
    languages: CategoryCounter
    caption_sources: CategoryCounter
    domains_accepted: CategoryCounter
    domains_rejected: CategoryCounter
    opt_out: dict[str, int]
    safety: dict[str, int]
    random_accepted: list[dict[str, Any]]
    near_threshold: list[dict[str, Any]]
    lowest_clip: bool  # near_threshold holds the lowest scores because no threshold is known
    rejected_by_reason: dict[str, list[dict[str, Any]]]
    duplicate_clusters: list[DuplicateCluster]
    # Per content head that scored anything: counts, its threshold (from stats.json's run),
    # the highest-scored accepted rows and the lowest-scored rejected ones.
    content_heads: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    faces: dict[str, int] = dataclasses.field(default_factory=dict)

    def top_domains(self, n: int = TOP_DOMAINS) -> list[dict[str, Any]]:
        """The n domains with the most candidates, with accepted and rejected counts."""
        names = set(self.domains_accepted.counts) | set(self.domains_rejected.counts)
        rows: list[dict[str, Any]] = [
            {
                "domain": name,
                "accepted": self.domains_accepted.counts.get(name, 0),
                "rejected": self.domains_rejected.counts.get(name, 0),
            }
            for name in names
        ]
        for row in rows:
            row["candidates"] = row["accepted"] + row["rejected"]
        rows.sort(key=lambda r: (-r["candidates"], r["domain"]))
        return rows[:n]

    @property
    def domains_exact(self) -> bool:
        return self.domains_accepted.exact and self.domains_rejected.exact

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures (histograms with their summaries; no image bytes)."""
        return {
            "dataset": self.dataset,
            "parameters": self.parameters,
            "generated_by": self.generated_by,
            "candidates": self.candidates,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "shards": self.shards,
            "funnel": self.funnel,
            "reasons": self.reasons,
            "by_source": self.by_source,
            "stats_json": self.stats_json,
            "warnings": self.warnings,
            "clip_threshold": self.clip_threshold,
            "distributions": {
                name: {
                    kind: {**dataclasses.asdict(hist), "summary": hist.summary()}
                    for kind, hist in series.items()
                }
                for name, series in self.distributions.items()
            },
            "languages": dataclasses.asdict(self.languages),
            "caption_sources": dataclasses.asdict(self.caption_sources),
            "domains": {"exact": self.domains_exact, "top": self.top_domains()},
            "opt_out": self.opt_out,
            "safety": self.safety,
            "galleries": {
                "random_accepted": self.random_accepted,
                "near_threshold": self.near_threshold,
                "near_threshold_is_lowest_clip": self.lowest_clip,
                "rejected_by_reason": self.rejected_by_reason,
                "duplicate_clusters": [dataclasses.asdict(c) for c in self.duplicate_clusters],
            },
            "content_heads": self.content_heads,
            "faces": self.faces,
            "run": self.run,
        }


def _iter_batches(
    fs: Any, path: str, columns: list[str], extra: dict[str, Any] | None = None
) -> Iterator[pa.Table]:
    """`path` in tables of at most BATCH_ROWS rows, with only `columns` (missing ones null)."""
    with storage.open_parquet(fs, path) as parquet:
        present = [c for c in columns if c in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=present):
            table = pa.Table.from_batches([batch])
            for column in columns:
                if column not in present:
                    table = table.append_column(column, pa.nulls(table.num_rows, pa.string()))
            for name, value in (extra or {}).items():
                table = table.append_column(name, pa.array([value] * table.num_rows))
            yield table


def _shard_parquets(fs: Any, root: str) -> list[tuple[int, str]]:
    """(shard id, path) of every committed shard parquet file, as stats.json counts them.

    Listed from the parquet files themselves (not the tars), so a metadata-only folder is
    counted exactly too; gallery images are then missing and say so.
    """
    found = []
    for path in sorted(fs.ls(root, detail=False)):
        shard_id = layout.parquet_shard_id(path)
        if shard_id is not None:
            found.append((shard_id, path))
    return found


def _rejects_parquets(fs: Any, root: str) -> list[str]:
    rejects = storage.join(root, layout.REJECTS_DIR)
    if not fs.exists(rejects):
        return []
    return [
        p
        for p in sorted(fs.ls(rejects, detail=False))
        if p.endswith(".parquet") and not storage.is_temporary(p)
    ]


def _hosts(urls: pa.ChunkedArray) -> pa.Array:
    matched = pc.extract_regex(urls, _HOST_PATTERN)
    return pc.utf8_lower(pc.struct_field(matched, "host")).combine_chunks()


def _clean_row(row: dict[str, Any]) -> dict[str, Any]:
    """A gallery row for JSON and the page: floats rounded, long crawled text cut."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, float):
            value = None if math.isnan(value) else round(value, 4)
        elif isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            value = value[:MAX_TEXT_CHARS] + f"… [{len(value) - MAX_TEXT_CHARS} more characters]"
        out[name] = value
    return out


def build_funnel(
    accepted: int, stage_reasons: dict[tuple[str, str], int]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The funnel over `Stage` order from exact counts, as stats.json lays it out.

    Rejects whose stage is not a known `Stage` (a newer or foreign writer) get rows after the
    known stages, so the funnel still adds up, and a warning.
    """
    known = [s.value for s in Stage]
    unknown = sorted({s for s, _ in stage_reasons} - set(known))
    remaining = accepted + sum(stage_reasons.values())
    funnel = []
    for stage in known + unknown:
        reasons = {r: n for (s, r), n in sorted(stage_reasons.items()) if s == stage}
        dropped = sum(reasons.values())
        funnel.append(
            {
                "stage": stage,
                "in": remaining,
                "rejected": dropped,
                "out": remaining - dropped,
                "reasons": reasons,
            }
        )
        remaining -= dropped
    warnings = [
        f"rejects name stage {s!r}, which this version of LAIT does not know; "
        "they are shown after the known stages"
        for s in unknown
    ]
    return funnel, warnings


def _threshold(run: dict[str, Any]) -> tuple[float | None, list[str]]:
    value = run.get("clip_threshold")
    if value is None:
        return None, []
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None, [f"stats.json run.clip_threshold is {value!r}, not a number; ignored"]
    return float(value), []


def _versions() -> dict[str, str]:
    import matplotlib
    import numpy

    return {
        "lait": lait.__version__,
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
        "numpy": numpy.__version__,
        "matplotlib": matplotlib.__version__,
    }


def collect_report_data(dataset: str, *, gallery_size: int = 24, seed: int = 0) -> ReportData:
    """Scan the dataset folder `dataset` once (twice for duplicate clusters) and sum it up."""
    folder = DatasetFolder(dataset)
    fs, root = storage.filesystem(dataset)
    warnings: list[str] = []
    try:
        stats: dict[str, Any] | None = folder.stats()
    except DatasetFolderError as error:
        stats = None
        warnings.append(f"{error} — the report counts the parquet files instead")
    run = dict((stats or {}).get("run") or {})
    threshold, threshold_warnings = _threshold(run)
    warnings += threshold_warnings

    histograms = {"accepted": _new_histograms(), "rejected": _new_histograms()}
    languages = CategoryCounter()
    caption_sources = CategoryCounter()
    domains = {"accepted": CategoryCounter(), "rejected": CategoryCounter()}
    sources: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    stage_reasons: collections.Counter[tuple[str, str]] = collections.Counter()
    random_accepted = Reservoir(gallery_size, seed)
    nearest = SmallestK(gallery_size)
    per_reason = Reservoir(max(3, min(8, gallery_size // 3)), seed + 1)
    duplicates = Reservoir(max(1, gallery_size // 2), seed + 2)
    heads = {signal: _HeadGalleries(gallery_size, signal) for signal in CONTENT_HEADS}
    faces = {"images_checked": 0, "images_with_faces": 0, "faces": 0}

    def count_faces(table: pa.Table) -> None:
        for value in table["face_boxes"].to_pylist():
            boxes = face_boxes_of(value)  # a list of boxes; JSON text in older folders
            if boxes is not None:
                found = len(boxes)
                faces["images_checked"] += 1
                faces["images_with_faces"] += found > 0
                faces["faces"] += found

    def measure(kind: str, table: pa.Table) -> None:
        hist = histograms[kind]
        for name in ("clip_score", "width", "height", "num_bytes", "language_score"):
            hist[name].add(table[name])
        hist["caption_length"].add(pc.utf8_length(table["caption"]))
        width = pc.cast(table["width"], pa.float64())
        height = pc.cast(table["height"], pa.float64())
        sized = pc.and_(pc.greater(width, 0), pc.greater(height, 0))
        hist["aspect_ratio"].add(pc.divide(pc.filter(width, sized), pc.filter(height, sized)))
        domains[kind].add(_hosts(table["url"]), missing_label=_NO_HOST)
        for item in table["source"].value_counts().to_pylist():
            sources[item["values"]][kind] += int(item["counts"])

    accepted = 0
    shard_files = _shard_parquets(fs, root)
    for shard_id, path in shard_files:
        for table in _iter_batches(fs, path, GALLERY_COLUMNS, {"shard": shard_id}):
            accepted += table.num_rows
            measure("accepted", table)
            languages.add(table["language"], missing_label=_NO_LANGUAGE)
            caption_sources.add(table["caption_source"], missing_label="(unknown)")
            random_accepted.add(table)
            count_faces(table)
            for galleries in heads.values():
                galleries.add_accepted(table)
            if threshold is not None:
                nearest.add(table, pc.abs(pc.subtract(table["clip_score"], threshold)))
            else:  # no threshold: the lowest-scoring accepted samples are the borderline ones
                nearest.add(table, table["clip_score"])

    rejects_files = _rejects_parquets(fs, root)
    for path in rejects_files:
        for table in _iter_batches(fs, path, REJECT_COLUMNS):
            measure("rejected", table)
            stage_column = table["reject_stage"].fill_null("(none)")
            reason_column = table["reject_reason"].fill_null("(none)")
            pairs = pa.table({"s": stage_column, "r": reason_column}).group_by(["s", "r"])
            for item in pairs.aggregate([([], "count_all")]).to_pylist():
                stage_reasons[(item["s"], item["r"])] += int(item["count_all"])
            per_reason.add(table, groups=reason_column.to_pylist())
            is_duplicate = pc.is_valid(table["duplicate_of"])
            duplicates.add(table.filter(is_duplicate))
            for galleries in heads.values():
                galleries.add_rejected(table, reason_column)

    funnel, funnel_warnings = build_funnel(accepted, dict(stage_reasons))
    warnings += funnel_warnings
    reasons: collections.Counter[str] = collections.Counter()
    for (_, reason), n in stage_reasons.items():
        reasons[reason] += n
    rejected = sum(reasons.values())
    stats_state = "missing"
    if stats is not None:
        same = (
            stats.get("funnel") == funnel
            and stats.get("accepted") == accepted
            and stats.get("rejected") == rejected
        )
        stats_state = "matches" if same else "differs"
        if not same:
            warnings.append(
                "stats.json does not match the parquet files (stats.json: "
                f"{stats.get('accepted')} accepted, {stats.get('rejected')} rejected; parquet: "
                f"{accepted} accepted, {rejected} rejected). The folder changed after its job "
                "finished; this report shows the parquet counts. Rerun the job's finalize step "
                "to refresh stats.json."
            )

    clusters = _duplicate_clusters(fs, shard_files, rejects_files, duplicates.rows())
    return ReportData(
        dataset=dataset,
        parameters={"gallery_size": gallery_size, "seed": seed},
        generated_by=_versions(),
        candidates=accepted + rejected,
        accepted=accepted,
        rejected=rejected,
        shards=len(shard_files),
        funnel=funnel,
        reasons=dict(sorted(reasons.items())),
        by_source={
            name: {
                "candidates": c["accepted"] + c["rejected"],
                "accepted": c["accepted"],
                "rejected": c["rejected"],
            }
            for name, c in sorted(sources.items())
        },
        run=run,
        clip_threshold=threshold,
        stats_json=stats_state,
        warnings=warnings,
        distributions={
            name: {kind: histograms[kind][name] for kind in ("accepted", "rejected")}
            for name in histograms["accepted"]
        },
        languages=languages,
        caption_sources=caption_sources,
        domains_accepted=domains["accepted"],
        domains_rejected=domains["rejected"],
        opt_out={r.value: reasons.get(r.value, 0) for r in OPT_OUT_REASONS},
        safety={r.value: reasons.get(r.value, 0) for r in SAFETY_REASONS},
        random_accepted=[_clean_row(r) for r in random_accepted.rows()],
        near_threshold=[_clean_row(r) for r in nearest.rows()],
        lowest_clip=threshold is None,
        rejected_by_reason={
            reason: [_clean_row(r) for r in per_reason.rows(reason)]
            for reason in sorted(per_reason.groups(), key=lambda g: (-reasons[g], g))
        },
        duplicate_clusters=clusters,
        content_heads={
            signal: galleries.figures(signal, run, reasons)
            for signal, galleries in heads.items()
            if galleries.scored
        },
        faces=faces if faces["images_checked"] else {},
    )


class _HeadGalleries:
    """One content head's galleries: highest-scored accepted, lowest-scored rejected."""

    def __init__(self, size: int, signal: str) -> None:
        self.column, self.reason = CONTENT_HEADS[signal]
        self.highest_accepted = SmallestK(size)
        self.lowest_rejected = SmallestK(size)
        self.scored = 0

    def add_accepted(self, table: pa.Table) -> None:
        values = _probabilities(table, self.column)
        self.scored += table.num_rows - values.null_count
        self.highest_accepted.add(table, pc.negate(values))

    def add_rejected(self, table: pa.Table, reasons: pa.ChunkedArray) -> None:
        values = _probabilities(table, self.column)
        self.scored += table.num_rows - values.null_count
        mine = pc.equal(reasons, self.reason.value)
        self.lowest_rejected.add(table.filter(mine), pc.filter(values, mine))

    def figures(self, signal: str, run: dict[str, Any], reasons: dict[str, int]) -> dict[str, Any]:
        """report.json's entry of this head."""
        heads = (run.get("clip") or {}).get("content_heads") or {}
        head = heads.get(signal) or {}
        return {
            "column": self.column,
            "reason": self.reason.value,
            "head": head.get("head"),
            "threshold": head.get("threshold"),
            "scored": self.scored,
            "rejected": reasons.get(self.reason.value, 0),
            "highest_accepted": [_clean_row(r) for r in self.highest_accepted.rows()],
            "lowest_rejected": [_clean_row(r) for r in self.lowest_rejected.rows()],
        }


def _probabilities(table: pa.Table, column: str) -> pa.ChunkedArray:
    """A probability column as float64 (null where the head did not run; a parquet file
    written before the heads existed has the column all null)."""
    return pc.cast(table[column], pa.float64())


def _duplicate_clusters(
    fs: Any,
    shard_files: list[tuple[int, str]],
    rejects_files: list[str],
    sampled: list[dict[str, Any]],
) -> list[DuplicateCluster]:
    """Clusters around the survivors that the sampled duplicates point at (one more scan)."""
    survivors = list(dict.fromkeys(str(row["duplicate_of"]) for row in sampled))
    if not survivors:
        return []
    wanted = pa.array(survivors)
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    members: dict[str, list[dict[str, Any]]] = {key: [] for key in survivors}
    totals: collections.Counter[str] = collections.Counter()
    for shard_id, path in shard_files:
        for table in _iter_batches(fs, path, GALLERY_COLUMNS, {"shard": shard_id}):
            for row in table.filter(pc.is_in(table["key"], value_set=wanted)).to_pylist():
                found[row["key"]] = ("accepted", row)
    for path in rejects_files:
        for table in _iter_batches(fs, path, REJECT_COLUMNS):
            for row in table.filter(pc.is_in(table["key"], value_set=wanted)).to_pylist():
                found.setdefault(row["key"], ("rejected", row))
            matches = table.filter(pc.is_in(table["duplicate_of"], value_set=wanted))
            for row in matches.to_pylist():
                survivor = row["duplicate_of"]
                totals[survivor] += 1
                if len(members[survivor]) < MAX_DUPLICATES_SHOWN:
                    members[survivor].append(_clean_row(row))
    clusters = []
    for key in survivors:
        status, row = found.get(key, ("missing", None))
        clusters.append(
            DuplicateCluster(
                survivor_key=key,
                survivor=_clean_row(row) if row is not None else None,
                survivor_status=status,
                duplicates=members[key],
                total_duplicates=totals[key],
            )
        )
    return clusters
