"""The dataset quality report: figures that add up, hostile text escaped, galleries, no-data."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from PIL import Image, ImageDraw

from lait.dataset import DatasetWriter
from lait.record import CaptionSource, Record, RejectReason
from lait.report import write_report
from lait.report.streaming import CategoryCounter, Histogram, Reservoir, SmallestK

SCRIPT_CAPTION = "<script>window.__pwned = 1; document.title = 'PWNED'</script>"
IMG_CAPTION = "<img src=x onerror=\"document.body.setAttribute('data-pwned', '1')\">"
HOSTILE_URL = "javascript:document.title='PWNED'"
THRESHOLD = 0.28
ACCEPTED = 30
SIZES = [(320, 240), (240, 320), (300, 300), (400, 200), (256, 256)]
LANGUAGES = ["en", "en", "de", "fr", "en", None]
DOMAINS = ["photos.example", "img.example.org", "cdn.example.net"]


def picture(i: int, width: int, height: int) -> bytes:
    """A small real JPEG that looks like something: a coloured field with a shape."""
    background = (40 + i * 37 % 180, 60 + i * 53 % 160, 80 + i * 29 % 150)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    box = (width // 5, height // 5, width * 4 // 5, height * 4 // 5)
    colour = (255 - background[0], 230, 255 - background[2])
    (draw.ellipse if i % 2 else draw.rectangle)(box, fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def accepted(i: int, caption: str | None = None, clip: bool = True) -> Record:
    width, height = SIZES[i % len(SIZES)]
    image = picture(i, width, height)
    candidate = Record.candidate(
        source="demo-web" if i % 3 else "cc-list",
        url=f"https://{DOMAINS[i % 3]}/images/{i}.jpg",
        caption=caption or f"a photograph of object number {i} on a plain background",
        caption_source=CaptionSource.ALT if i % 4 else CaptionSource.TITLE,
        page_url=f"https://{DOMAINS[i % 3]}/page/{i}.html",
    )
    language = LANGUAGES[i % len(LANGUAGES)]
    return dataclasses.replace(
        candidate,
        image=image,
        image_format="jpg",
        width=width,
        height=height,
        num_bytes=len(image),
        language=language,
        language_score=0.9 + (i % 10) / 100 if language else None,
        clip_score=round(0.22 + (i * 7 % 25) / 100, 4) if clip else None,
        p_nonnatural=round((i * 13 % 40) / 100, 4) if clip else None,
        p_watermark=round((i * 7 % 45) / 100, 4) if clip else None,
        face_boxes=(((10, 10, 60, 60),) if i % 5 == 0 else ()) if clip else None,
    ).accepted()


def rejected(
    i: int,
    reason: RejectReason,
    *,
    caption: str | None = None,
    url: str | None = None,
    duplicate_of: str | None = None,
    clip_score: float | None = None,
    value: float | None = None,
    limit: float | None = None,
    **fields: Any,
) -> Record:
    candidate = Record.candidate(
        source="demo-web",
        url=url or f"https://{DOMAINS[i % 3]}/bad/{reason.value}/{i}.jpg",
        caption=caption or f"rejected caption {i} for {reason.value}",
        caption_source=CaptionSource.ALT,
    )
    if clip_score is not None:
        candidate = dataclasses.replace(candidate, clip_score=clip_score)
    candidate = dataclasses.replace(candidate, **fields)
    return candidate.rejected(
        reason, detail=f"detail {i}", duplicate_of=duplicate_of, value=value, limit=limit
    )


# Content-head rejects: (reason, probability column, probabilities).
CONTENT_REJECTS = [
    (RejectReason.NONNATURAL_IMAGE, "p_nonnatural", (0.97, 0.62, 0.81)),
    (RejectReason.WATERMARKED_IMAGE, "p_watermark", (0.9, 0.55)),
]


REJECTS: list[tuple[RejectReason, int]] = [
    (RejectReason.TOO_SMALL, 3),
    (RejectReason.HTTP_NOT_FOUND, 2),
    (RejectReason.WRONG_LANGUAGE, 2),
    (RejectReason.X_ROBOTS_TAG_OPT_OUT, 2),
    (RejectReason.META_ROBOTS_OPT_OUT, 1),
    (RejectReason.ROBOTS_TXT_DISALLOWED, 1),
    (RejectReason.BLOCKED_ADDRESS, 1),
]


def audit_records() -> list[Record]:
    """Accepted samples and rejects of many reasons, with hostile captions and URLs."""
    records = [accepted(i) for i in range(ACCEPTED - 1)]
    records.append(accepted(ACCEPTED - 1, caption=SCRIPT_CAPTION))
    n = 0
    for reason, count in REJECTS:
        for _ in range(count):
            records.append(rejected(n, reason))
            n += 1
    records.append(rejected(n, RejectReason.CAPTION_TOO_LONG, caption=SCRIPT_CAPTION + " x"))
    records.append(rejected(n + 1, RejectReason.INVALID_URL, url=HOSTILE_URL))
    for j, score in enumerate((0.11, 0.19)):
        records.append(rejected(n + 2 + j, RejectReason.LOW_CLIP_SCORE, clip_score=score))
    survivor = records[3].key
    records.append(
        rejected(n + 4, RejectReason.DUPLICATE_EXACT, caption=IMG_CAPTION, duplicate_of=survivor)
    )
    records.append(
        rejected(n + 5, RejectReason.DUPLICATE_PERCEPTUAL, duplicate_of=survivor, value=7, limit=10)
    )
    records.append(
        rejected(
            n + 6,
            RejectReason.DUPLICATE_CAPTION,
            duplicate_of=records[5].key,
            value=0.9231,
            limit=0.9,
        )
    )
    n += 7
    for reason, column, values in CONTENT_REJECTS:
        for value in values:
            records.append(rejected(n, reason, clip_score=0.3, **{column: value}))
            n += 1
    return records


RUN = {
    "clip_threshold": THRESHOLD,
    "clip": {
        "threshold": THRESHOLD,
        "content_heads": {
            "nonnatural": {"head": "lait-demo-nonnatural", "threshold": 0.5, "reject": True},
            "watermark": {"head": "lait-demo-watermark", "threshold": 0.5, "reject": True},
        },
    },
    "started": "2026-11-23T07:00:00Z",
    "seconds": 12.5,
    "sources": ["demo-web", "cc-list"],
    "versions": {"lait": "0.1.0", "open_clip": "3.3.0"},
    "config": {"fetch": {"respect_robots_txt": True, "allow_loopback": True}, "min_side": 64},
}


def write_audit_dataset(folder: Path, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The test dataset folder; returns its stats."""
    with DatasetWriter(folder, samples_per_shard=8, rejects_per_part=6, run=run or RUN) as w:
        w.write_all(audit_records())
    assert w.stats is not None
    return w.stats


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str, dict]:
    folder = tmp_path_factory.mktemp("report") / "ds"
    stats = write_audit_dataset(folder)
    paths = write_report(str(folder), gallery_size=12)
    html = Path(paths.html).read_text(encoding="utf-8")
    figures = json.loads(Path(paths.json).read_text(encoding="utf-8"))
    return folder, stats, html, figures


def test_report_json_funnel_equals_stats_json(report: tuple) -> None:
    folder, stats, _, figures = report
    assert figures["funnel"] == stats["funnel"]
    assert json.loads((folder / "stats.json").read_text())["funnel"] == figures["funnel"]
    for field in ("candidates", "accepted", "rejected", "shards", "reasons", "by_source"):
        assert figures[field] == stats[field], field
    assert figures["stats_json"] == "matches" and figures["warnings"] == []
    assert figures["opt_out"] == {
        "x_robots_tag_opt_out": 2,
        "meta_robots_opt_out": 1,
        "robots_txt_disallowed": 1,
    }
    assert figures["safety"]["blocked_address"] == 1


def test_funnel_numbers_are_on_the_page(report: tuple) -> None:
    _, stats, html, _ = report
    for figure in ("candidates", "accepted", "rejected"):
        assert f'data-figure="{figure}" data-value="{stats[figure]}"' in html
    for step in stats["funnel"]:
        for field in ("in", "rejected", "out"):
            cell = f'data-stage="{step["stage"]}" data-field="{field}">{step[field]:,}</span>'
            assert cell in html


def test_crawled_text_is_escaped(report: tuple) -> None:
    _, _, html, _ = report
    assert "<script" not in html.lower()
    assert (
        "&lt;script&gt;window.__pwned = 1; document.title = &#x27;PWNED&#x27;&lt;/script&gt;"
        in html
    )
    assert "<img src=x" not in html and "&lt;img src=x onerror=" in html
    assert 'href="javascript:' not in html.lower()
    assert "javascript:document.title=&#x27;PWNED&#x27;" in html  # shown as text, not linked
    assert "<title>LAIT report · ds</title>" in html
    assert "Content-Security-Policy" in html and 'name="viewport"' in html


def test_page_is_self_contained(report: tuple) -> None:
    _, _, html, _ = report
    assert 'src="http' not in html and "url(http" not in html and "@import" not in html
    assert html.count('class="plot"') >= 7  # funnel, reasons, 5+ distributions
    assert html.count("data:image/svg+xml;base64,") >= 7
    assert html.count('src="data:image/jpeg;base64,') >= 12


def test_figures_cover_the_distributions(report: tuple) -> None:
    _, _, _, figures = report
    dist = figures["distributions"]
    assert dist["clip_score"]["accepted"]["summary"]["n"] == ACCEPTED
    # Two LOW_CLIP_SCORE rejects and the content heads' rejects (scored, then rejected).
    content = sum(len(values) for _, _, values in CONTENT_REJECTS)
    assert dist["clip_score"]["rejected"]["summary"]["n"] == 2 + content
    assert sum(dist["width"]["accepted"]["counts"]) == ACCEPTED
    assert figures["languages"]["counts"]["(not identified)"] == ACCEPTED // len(LANGUAGES)
    assert figures["languages"]["exact"] is True
    top = {row["domain"]: row for row in figures["domains"]["top"]}
    assert set(top) == {*DOMAINS, "(no host)"}  # the javascript: URL has no host
    assert sum(row["candidates"] for row in top.values()) == figures["candidates"]
    assert figures["clip_threshold"] == THRESHOLD


def test_galleries(report: tuple) -> None:
    _, _, _, figures = report
    galleries = figures["galleries"]
    assert len(galleries["random_accepted"]) == 12
    assert len({row["key"] for row in galleries["random_accepted"]}) == 12
    near = [round(abs(r["clip_score"] - THRESHOLD), 4) for r in galleries["near_threshold"]]
    assert near == sorted(near) and len(near) == 12
    every = sorted(abs(accepted(i).clip_score - THRESHOLD) for i in range(ACCEPTED - 1))  # type: ignore[operator]
    assert near[0] == pytest.approx(every[0], abs=1e-4)
    by_reason = galleries["rejected_by_reason"]
    assert set(by_reason) == set(figures["reasons"])
    assert all(len(rows) == min(figures["reasons"][r], 4) for r, rows in by_reason.items())
    clusters = {c["survivor_key"]: c for c in galleries["duplicate_clusters"]}
    records = audit_records()
    big = clusters[records[3].key]
    assert big["survivor_status"] == "accepted" and big["total_duplicates"] == 2
    assert {d["reject_reason"] for d in big["duplicates"]} == {
        "duplicate_exact",
        "duplicate_perceptual",
    }
    # each drop carries what its stage measured of the pair and the bound it met
    measured = {
        d["reject_reason"]: (d["reject_value"], d["reject_limit"]) for d in big["duplicates"]
    }
    assert measured == {"duplicate_exact": (None, None), "duplicate_perceptual": (7.0, 10.0)}
    caption = clusters[records[5].key]["duplicates"]
    assert [(d["reject_value"], d["reject_limit"]) for d in caption] == [(0.9231, 0.9)]


def test_content_head_galleries(report: tuple) -> None:
    _, _, html, figures = report
    heads = figures["content_heads"]
    assert set(heads) == {"nonnatural", "watermark"}  # the unsafe head scored nothing
    for reason, column, values in CONTENT_REJECTS:
        head = heads[column[2:]]
        assert head["head"] == f"lait-demo-{column[2:]}" and head["threshold"] == 0.5
        assert head["rejected"] == len(values) == len(head["lowest_rejected"])
        assert [r[column] for r in head["lowest_rejected"]] == sorted(values)
        assert all(r["reject_reason"] == reason.value for r in head["lowest_rejected"])
        shown = [r[column] for r in head["highest_accepted"]]
        every = sorted((getattr(accepted(i), column) for i in range(ACCEPTED)), reverse=True)
        assert shown == every[:12] and head["scored"] == ACCEPTED + len(values)
        assert f'data-head="{column[2:]}"' in html
    assert figures["faces"] == {"images_checked": 30, "images_with_faces": 6, "faces": 6}
    assert 'id="content"' in html and "Lowest-scored rejected" in html


def test_report_is_deterministic_and_seeded(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    write_audit_dataset(folder)
    first = write_report(str(folder), str(tmp_path / "a"), gallery_size=6)
    second = write_report(str(folder), str(tmp_path / "b"), gallery_size=6)
    assert Path(first.html).read_bytes() == Path(second.html).read_bytes()
    assert Path(first.json).read_bytes() == Path(second.json).read_bytes()
    other = write_report(str(folder), str(tmp_path / "c"), gallery_size=6, seed=7)
    keys = [
        {r["key"] for r in json.loads(Path(p).read_text())["galleries"]["random_accepted"]}
        for p in (first.json, other.json)
    ]
    assert keys[0] != keys[1]
    assert first.html == str(tmp_path / "a" / "report.html")
    assert not (folder / "report.html").exists()


def test_default_output_is_the_dataset_folder(tmp_path: Path) -> None:
    write_audit_dataset(tmp_path / "ds")
    paths = write_report(str(tmp_path / "ds"))
    assert paths.html == str(tmp_path / "ds" / "report.html")
    assert Path(paths.json).is_file()


def test_sections_without_data_say_so(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path / "plain", samples_per_shard=4) as writer:
        for i in range(5):
            writer.write(dataclasses.replace(accepted(i, clip=False), language=None))
    html = Path(write_report(str(tmp_path / "plain")).html).read_text()
    assert "No CLIP scores yet" in html
    assert "No languages identified yet" in html
    assert "Nothing was rejected." in html
    assert "No duplicates recorded" in html
    assert "No content head ran on this dataset" in html
    figures = json.loads((tmp_path / "plain" / "report.json").read_text())
    assert figures["clip_threshold"] is None and figures["galleries"]["near_threshold"] == []

    with DatasetWriter(tmp_path / "empty"):
        pass
    html = Path(write_report(str(tmp_path / "empty")).html).read_text()
    assert "This folder holds no records" in html and "No accepted samples to show." in html


def test_stale_stats_json_is_flagged(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    stats = write_audit_dataset(folder)
    (folder / "stats.json").write_text(json.dumps(dict(stats, accepted=stats["accepted"] + 1)))
    paths = write_report(str(folder))
    figures = json.loads(Path(paths.json).read_text())
    assert figures["stats_json"] == "differs"
    assert figures["accepted"] == ACCEPTED  # the parquet count, not the edited one
    assert any("stats.json does not match" in w for w in figures["warnings"])
    assert "stats.json does not match" in Path(paths.html).read_text()

    (folder / "stats.json").unlink()
    figures = json.loads(Path(write_report(str(folder)).json).read_text())
    assert figures["stats_json"] == "missing" and figures["funnel"] == stats["funnel"]


def test_undecodable_gallery_image_is_reported_not_fatal(tmp_path: Path) -> None:
    broken = dataclasses.replace(accepted(0), image=b"\xff\xd8 not really a jpeg")
    with DatasetWriter(tmp_path / "ds") as writer:
        writer.write(broken)
    paths = write_report(str(tmp_path / "ds"))
    figures = json.loads(Path(paths.json).read_text())
    assert any("could not be shown" in w for w in figures["warnings"])
    assert "undecodable image" in Path(paths.html).read_text()


def test_histogram_bins_and_quantiles() -> None:
    hist = Histogram.linear(0, 10, 10)
    hist.add(pa.array([0.0, 0.5, 1.0, 9.99, 10.0, -1.0, None, float("nan")], pa.float64()))
    assert hist.counts[0] == 2 and hist.counts[1] == 1 and hist.counts[9] == 1
    assert (hist.below, hist.above, hist.missing, hist.count) == (1, 1, 2, 6)
    many = Histogram.linear(0, 1, 100)
    many.add(pa.array([i / 1000 for i in range(1000)]))
    assert many.quantile(0.5) == pytest.approx(0.5, abs=0.011)
    assert many.summary()["min"] == 0.0 and many.summary()["max"] == pytest.approx(0.999)


def test_reservoir_is_uniform_bounded_and_seeded() -> None:
    table = pa.table({"key": [f"k{i:04d}" for i in range(1000)], "g": ["a", "b"] * 500})
    hits = {f"k{i:04d}": 0 for i in range(1000)}
    for seed in range(200):
        reservoir = Reservoir(10, seed)
        for start in range(0, 1000, 64):
            reservoir.add(table.slice(start, 64))
        rows = reservoir.rows()
        assert len(rows) == 10
        for row in rows:
            hits[row["key"]] += 1
    # each key is expected 2 times; uniform sampling keeps the first and last halves even
    first_half = sum(v for k, v in hits.items() if k < "k0500")
    assert 800 < first_half < 1200
    a, b = Reservoir(5, 3), Reservoir(5, 3)
    a.add(table, groups=table["g"].to_pylist())
    b.add(table, groups=table["g"].to_pylist())
    assert a.rows("a") == b.rows("a") and {r["g"] for r in a.rows("b")} == {"b"}


def test_smallest_k_and_category_counter() -> None:
    table = pa.table({"key": ["c", "b", "a", "d"], "v": [0.5, 0.1, 0.1, None]})
    smallest = SmallestK(2)
    smallest.add(table, table["v"])
    assert [r["key"] for r in smallest.rows()] == ["a", "b"]
    counter = CategoryCounter(capacity=4)
    counter.add(pa.array(["x", "x", "y", None]), missing_label="none")
    assert counter.counts == {"x": 2, "y": 1, "none": 1} and counter.exact
    counter.add(pa.array(["p", "q", "x"]))
    assert not counter.exact and counter.top(1) == [("x", 3)] and len(counter.counts) <= 4
