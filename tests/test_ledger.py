"""The rejects ledger identifies and reproduces: one id per sighting, the same details on a
rerun, typed measures beside the words, and the CLIP model and threshold in stats.json."""

from __future__ import annotations

import dataclasses
import http.server
import io
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import jpeg_bytes
from PIL import Image

from lait.dataset import DatasetFolder, check_stats
from pipeline.clip import ClipConfig
from pipeline.config import OutputConfig, PipelineConfig, SourcesConfig
from pipeline.fetch import FetchConfig
from pipeline.run import run_pipeline

MIN_CLIP_SCORE = 0.99  # above any real pair's score: every scored pair is a low-score reject


def _page(photo: str, caption: str) -> bytes:
    return (
        "<!doctype html><html><body>"
        '<img src="/favicon.png" alt="the site logo of our shop">'
        f'<img src="/{photo}" alt="{caption}">'
        '<img src="/broken.jpg" alt="a picture of a dog in the garden">'
        '<img src="/small.jpg" alt="a small picture of a cat on a sofa">'
        "</body></html>"
    ).encode()


def _noise_jpeg(width: int, height: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


FILES: dict[str, tuple[str, bytes]] = {
    "/a.html": ("text/html", _page("red.jpg", "a red square on a grey background")),
    "/b.html": ("text/html", _page("blue.jpg", "a blue circle in the middle of the picture")),
    "/red.jpg": ("image/jpeg", jpeg_bytes(320, 320, (200, 30, 30))),
    "/blue.jpg": ("image/jpeg", jpeg_bytes(320, 320, (30, 30, 200))),
    "/small.jpg": ("image/jpeg", _noise_jpeg(100, 100)),  # noise: over min_bytes
    # Not an image format Pillow knows: its error names the BytesIO and its address.
    "/broken.jpg": ("image/jpeg", b"this is not an image at all. " * 100),
}


class _Static(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        content_type, body = FILES.get(self.path, ("text/plain", b""))
        self.send_response(200 if self.path in FILES else 404)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Static)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _config(folder: Path, base_url: str) -> PipelineConfig:
    return PipelineConfig(
        sources=SourcesConfig(pages=(f"{base_url}/a.html", f"{base_url}/b.html")),
        fetch=FetchConfig(allowed_networks=("127.0.0.1/32",), retries=0),
        clip=ClipConfig(model="lait-demo-clip", min_score=MIN_CLIP_SCORE),
        output=OutputConfig(folder=str(folder)),
    )


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory, base_url: str) -> list[DatasetFolder]:
    folders = []
    for name in ("first", "second"):
        folder = tmp_path_factory.mktemp("ledger") / name
        run_pipeline(
            _config(folder, base_url), ["--direct_running_mode=in_memory"], show_progress=False
        )
        folders.append(DatasetFolder(folder))
    return folders


def test_every_row_has_its_own_sighting_id(two_runs: list[DatasetFolder]) -> None:
    folder = two_runs[0]
    check_stats(folder.stats())
    rows = folder.rejects().to_pylist() + folder.metadata().to_pylist()
    assert len(rows) == 8  # 4 images on each of 2 pages
    ids = [row["sighting_id"] for row in rows]
    assert None not in ids and len(set(ids)) == len(ids)
    # The logo is one key (same url and caption) on both pages: two rows, two sightings.
    logos = [row for row in rows if row["url"].endswith("/favicon.png")]
    assert [row["reject_reason"] for row in logos] == ["icon", "icon"]
    assert logos[0]["key"] == logos[1]["key"]
    assert logos[0]["sighting_id"] != logos[1]["sighting_id"]


def test_a_rerun_writes_the_same_ledger(two_runs: list[DatasetFolder]) -> None:
    first, second = (folder.rejects() for folder in two_runs)
    reasons = sorted(first.column("reject_reason").to_pylist())
    # broken.jpg and small.jpg are on both pages with one caption: one each is fetched.
    assert reasons.count("undecodable_image") == 1 and reasons.count("low_clip_score") == 2
    assert reasons.count("duplicate_url_caption") == 2
    details = first.column("reject_detail").to_pylist()
    assert not [d for d in details if d and re.search(r"object at 0x[0-9a-f]+", d)], details
    assert first.column("reject_detail").equals(second.column("reject_detail"))
    assert first.equals(second)
    assert [p.read_bytes() for p in sorted(Path(two_runs[0].path, "rejects").iterdir())] == [
        p.read_bytes() for p in sorted(Path(two_runs[1].path, "rejects").iterdir())
    ]


def test_compared_rejects_carry_typed_value_and_limit(two_runs: list[DatasetFolder]) -> None:
    rejects = two_runs[0].rejects()
    assert rejects.schema.field("reject_value").type == pa.float64()
    assert rejects.schema.field("reject_limit").type == pa.float64()
    by_reason: dict[str, list[dict[str, object]]] = {}
    for row in rejects.to_pylist():
        by_reason.setdefault(row["reject_reason"], []).append(row)
    for row in by_reason["low_clip_score"]:
        assert row["reject_limit"] == MIN_CLIP_SCORE
        assert row["reject_value"] == pytest.approx(row["clip_score"], abs=1e-6)
        assert row["reject_value"] < MIN_CLIP_SCORE
    for row in by_reason["too_small"]:
        assert (row["reject_value"], row["reject_limit"]) == (100.0, 300.0)
    for row in by_reason["icon"] + by_reason["undecodable_image"]:  # no measure to compare
        assert row["reject_value"] is None and row["reject_limit"] is None


def test_stats_record_the_clip_model_and_threshold(two_runs: list[DatasetFolder]) -> None:
    run = two_runs[0].stats()["run"]
    assert run["clip"]["model"] == "lait-demo-clip"
    assert run["clip"]["policy"] == "threshold"
    assert run["clip"]["threshold"] == MIN_CLIP_SCORE
    assert run["clip_threshold"] == MIN_CLIP_SCORE  # what the quality report marks


def test_repeated_list_rows_are_two_sightings() -> None:
    import io

    from pipeline.sources import read_conceptual_captions

    rows = "a red square on grey\thttp://127.0.0.1/red.jpg\n" * 2
    records = list(read_conceptual_captions(io.BytesIO(rows.encode()), source="cc"))
    assert records[0].key == records[1].key
    assert records[0].sighting_id != records[1].sighting_id
    again = list(read_conceptual_captions(io.BytesIO(rows.encode()), source="cc"))
    assert [r.sighting_id for r in again] == [r.sighting_id for r in records]
    assert dataclasses.replace(records[0]).sighting_id == records[0].sighting_id


def test_reject_details_lose_memory_addresses() -> None:
    from lait.record import CaptionSource, Record, RejectReason

    record = Record.candidate(source="t", url="u", caption="c", caption_source=CaptionSource.ALT)
    rejected = record.rejected(
        RejectReason.CONNECTION_ERROR,
        "cannot connect: <urllib3.connection.HTTPConnection object at 0x7f3a2b1c9d50>: refused",
    )
    assert rejected.reject_detail == (
        "cannot connect: <urllib3.connection.HTTPConnection object>: refused"
    )
