"""`lait crawl` names its CLIP model or turns CLIP off: the demo model is never a default."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import jpeg_bytes

from lait.cli import main
from lait.dataset import DatasetFolder
from pipeline.clip.config import KNOWN_MIN_SCORES

PHOTO = jpeg_bytes(320, 320, (200, 30, 30))
REQUESTS: list[str] = []  # paths served, for the test that nothing is fetched
PAGE = b'<!doctype html><img src="/photo.jpg" alt="a red square on a grey background">'


class _Site(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        REQUESTS.append(self.path)
        content_type, body = ("text/html", PAGE) if self.path == "/" else ("image/jpeg", PHOTO)
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def site() -> Iterator[str]:
    REQUESTS.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _crawl(site: str, out: Path, *settings: str) -> int:
    args = ["crawl", "--pages", site, "--out", str(out), "--allow-network", "127.0.0.1/32"]
    for setting in settings:
        args += ["--set", setting]
    return main([*args, "--no-progress", "--direct_running_mode=in_memory"])


def test_crawl_without_a_clip_model_stops_before_any_work(
    tmp_path: Path, site: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ds"
    assert _crawl(site, out) == 2
    error = capsys.readouterr().err
    assert "no CLIP model named" in error
    for option in ("clip.model=", "clip.pretrained=", "clip.enabled=false", "lait-demo-clip"):
        assert option in error
    assert not out.exists()  # nothing written
    assert REQUESTS == []  # nothing fetched


def test_download_without_a_clip_model_stops_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cc = tmp_path / "cc.tsv"
    cc.write_text("a red square\thttp://127.0.0.1:9/photo.jpg\n")
    out = tmp_path / "ds"
    assert main(["download", "--cc", str(cc), "--out", str(out), "--no-progress"]) == 2
    assert "no CLIP model named" in capsys.readouterr().err
    assert not out.exists()


def test_crawl_with_the_demo_model_named_scores_as_before(tmp_path: Path, site: str) -> None:
    out = tmp_path / "ds"
    assert _crawl(site, out, "clip.model=lait-demo-clip") == 0
    folder = DatasetFolder(out)
    stats = folder.stats()
    assert stats["candidates"] == 1 and stats["run"]["clip"]["model"] == "lait-demo-clip"
    # the demo model's known threshold (set where the demo model is trained)
    assert stats["run"]["clip_threshold"] == KNOWN_MIN_SCORES["lait-demo-clip"]
    rows = folder.metadata(["clip_score"]).to_pylist() + folder.rejects().to_pylist()
    assert rows[0]["clip_score"] is not None


def test_crawl_with_clip_turned_off_scores_nothing(tmp_path: Path, site: str) -> None:
    out = tmp_path / "ds"
    assert _crawl(site, out, "clip.enabled=false") == 0
    folder = DatasetFolder(out)
    assert folder.stats()["accepted"] == 1
    assert folder.metadata(["clip_score"]).column(0).to_pylist() == [None]
    assert folder.stats()["run"]["clip"]["enabled"] is False
