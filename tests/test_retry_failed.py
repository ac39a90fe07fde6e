"""`--retry-failed` against a loopback server whose images fail transiently on the first run
(503, 429, a timeout) and answer on the second: what now passes moves into new shards, the
ledger no longer lists it, the funnel adds up, nothing is written twice, and lasting
failures (a 404) are not fetched again."""

from __future__ import annotations

import http.server
import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lait_runs import loopback_args, run_killed
from PIL import Image

from lait.cli import main
from lait.dataset import DatasetFolder, check_stats, compute_stats

WORDS = [
    *("red", "blue", "green", "small", "large", "old", "new", "quiet", "busy", "bright"),
    *("dark", "wooden", "stone", "glass", "metal", "house", "boat", "garden", "river"),
    *("bridge", "mountain", "street", "market", "tower", "forest", "beach", "field"),
    *("road", "window", "door", "table", "chair", "lamp", "clock", "tree", "flower"),
]


def _picture(seed: int) -> bytes:
    """A 320x320 JPEG of its own (noise with a seed: distinct bytes and pHash)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((320, 320), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def _caption(seed: int) -> str:
    rng = np.random.default_rng(1000 + seed)
    words = [str(w) for w in rng.choice(WORDS, size=7, replace=False)]
    return f"a photo of the {' '.join(words)} in the morning light"


# name → how it answers until healed: a number is an HTTP status, "slow" sleeps past the
# fetch timeout; "copy" serves the bytes of image 0 (a duplicate of an accepted sample).
FLAKY: dict[str, int | str] = {
    "s503": 503,
    "s429": 429,
    "slow": "slow",
    "copy": 503,
    "gone": 404,
    "down": 503,
}
STILL_FAILING = {"gone", "down"}  # these do not heal


class _Images(http.server.BaseHTTPRequestHandler):
    server: _ImageServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.strip("/").removesuffix(".jpg")
        state = self.server
        with state.lock:
            state.requests[name] += 1
            healed = state.healed
        mode = FLAKY.get(name)
        if mode is not None and (not healed or name in STILL_FAILING):
            if mode == "slow":
                time.sleep(1.5)  # past the fetch timeout: the client has gone
                return
            else:
                self.send_response(int(mode))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = state.images.get(name)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _ImageServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Images)
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.healed = False
        self.images = {f"ok{i}": _picture(i) for i in range(6)}
        for index, name in enumerate(FLAKY):
            self.images[name] = _picture(100 + index)
        self.images["copy"] = self.images["ok0"]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[_ImageServer]:
    running = _ImageServer()
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()


def _cc_list(tmp: Path, server: _ImageServer) -> Path:
    names = sorted(server.images)
    lines = [f"{_caption(i)}\t{server.base_url}/{name}.jpg" for i, name in enumerate(names)]
    # The same image URL under a second caption: fetched once, both candidates retried.
    lines.append(f"{_caption(99)}\t{server.base_url}/s503.jpg")
    path = tmp / "cc.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _args(cc: Path, out: Path | str, *extra: str) -> list[str]:
    settings = {
        "fetch.retries": 0,
        "fetch.total_timeout_s": 0.5,
        "clip.enabled": "false",
        "output.samples_per_shard": 3,
        "output.rejects_per_part": 2,
        "fetch_threads": 2,
    }
    return loopback_args(
        "download", ["--cc", str(cc)], out, settings, "--direct_running_mode=in_memory", *extra
    )


def _outcomes(folder: Path) -> dict[tuple[str, str], str]:
    """(url path, caption) → 'accepted' or its reject reason, checking nothing is twice."""
    data = DatasetFolder(folder)
    out: dict[tuple[str, str], str] = {}
    for row in data.metadata(["url", "caption"]).to_pylist():
        key = (row["url"].rsplit("/", 1)[-1], row["caption"])
        assert key not in out, f"{key} accepted twice"
        out[key] = "accepted"
    for row in data.rejects(["url", "caption", "reject_reason"]).to_pylist():
        key = (row["url"].rsplit("/", 1)[-1], row["caption"])
        assert key not in out, f"{key} both accepted and ledgered, or ledgered twice"
        out[key] = row["reject_reason"]
    return out


def _by_name(outcomes: dict[tuple[str, str], str]) -> dict[str, list[str]]:
    named: dict[str, list[str]] = {}
    for (path, _), outcome in sorted(outcomes.items()):
        named.setdefault(path.removesuffix(".jpg"), []).append(outcome)
    return named


def _check_folder(folder: Path, candidates: int) -> dict[str, Any]:
    data = DatasetFolder(folder)
    stats = data.stats()
    check_stats(stats)
    assert stats["candidates"] == candidates
    assert stats["accepted"] == data.metadata(["key"]).num_rows
    assert stats["rejected"] == data.rejects(["key"]).num_rows
    keys = data.metadata(["key"]).column(0).to_pylist()
    assert len(keys) == len(set(keys))
    assert not (folder / "_staging").exists()
    assert [p.name for p in folder.rglob(".*")] == []
    assert sum(data.sizes().values()) == stats["accepted"]
    # The counts the job merged equal a recount of every committed parquet file.
    assert compute_stats(str(folder))["funnel"] == stats["funnel"]
    return stats


# With CLIP on: the demo model, with a floor every picture passes (the scoring stage runs on
# the retried candidates, nothing is dropped by it).
WITH_CLIP: tuple[str, ...] = ("--set", "clip.enabled=true", "--set", "clip.model=lait-demo-clip")
WITH_CLIP += ("--set", "clip.min_score=-100")


@pytest.mark.parametrize(
    "clip",
    [(), pytest.param(WITH_CLIP, marks=pytest.mark.slow, id="clip")],
    ids=["no-clip", "clip"],
)
def test_retry_failed_moves_what_now_answers_into_new_shards(
    clip: tuple[str, ...], tmp_path: Path, server: _ImageServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cc = _cc_list(tmp_path, server)
    out = tmp_path / "ds"
    candidates = len(cc.read_text().splitlines())
    assert main(_args(cc, out, *clip)) == 0
    first = _by_name(_outcomes(out))
    assert first["s503"] == ["http_server_error", "http_server_error"]
    assert first["s429"] == ["http_client_error"] and first["slow"] == ["timeout"]
    assert first["gone"] == ["http_not_found"] and first["down"] == ["http_server_error"]
    assert all(first[f"ok{i}"] == ["accepted"] for i in range(6))
    before = _check_folder(out, candidates)
    shards_before = {p.name: p.read_bytes() for p in out.glob("*.tar")}

    server.healed = True
    requested = Counter(server.requests)
    assert main(_args(cc, out, "--retry-failed", *clip)) == 0
    assert "accepted" in capsys.readouterr().out
    after = _by_name(_outcomes(out))
    # One URL under two captions: fetched once, one caption kept, as an uninterrupted run
    # keeps one (CLIP's best caption per image, else dedupe's same-URL rule).
    second = "not_best_caption" if clip else "duplicate_url"
    assert sorted(after["s503"]) == ["accepted", second]
    assert after["s429"] == ["accepted"] and after["slow"] == ["accepted"]
    assert after["copy"] == ["duplicate_exact"]  # the bytes of ok0, already a sample
    assert after["down"] == ["http_server_error"]  # tried again, failed again
    assert after["gone"] == ["http_not_found"]  # a lasting failure: not tried again
    assert {n: after[n] for n in after if n.startswith("ok")} == {
        n: first[n] for n in first if n.startswith("ok")
    }
    fetched = {name: server.requests[name] - requested[name] for name in server.requests}
    assert fetched["gone"] == 0 and all(fetched[f"ok{i}"] == 0 for i in range(6))
    assert fetched["s503"] == 1 and fetched["down"] == 1
    # Old shards are untouched; the moved samples are in new shards numbered after them.
    for name, data in shards_before.items():
        assert (out / name).read_bytes() == data
    new_shards = sorted(set(p.name for p in out.glob("*.tar")) - set(shards_before))
    assert new_shards and min(new_shards) > max(shards_before)
    stats = _check_folder(out, candidates)
    assert stats["accepted"] == before["accepted"] + 3
    assert stats["run"]["retries"][0]["generation"] == 1
    assert stats["run"]["resumed"] is False  # the first run's information is kept
    if clip:
        scores = DatasetFolder(out).metadata(["url", "clip_score"]).to_pylist()
        assert all(row["clip_score"] is not None for row in scores)


@pytest.mark.slow  # ~60 s: three runs
def test_a_second_retry_fetches_only_what_still_fails(
    tmp_path: Path, server: _ImageServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cc = _cc_list(tmp_path, server)
    out = tmp_path / "ds"
    candidates = len(cc.read_text().splitlines())
    assert main(_args(cc, out)) == 0
    server.healed = True
    assert main(_args(cc, out, "--retry-failed")) == 0
    after = _by_name(_outcomes(out))
    requested = Counter(server.requests)
    assert main(_args(cc, out, "--retry-failed")) == 0
    capsys.readouterr()
    fetched = {name: server.requests[name] - requested[name] for name in server.requests}
    assert {name for name, n in fetched.items() if n} == {"down"}
    assert _by_name(_outcomes(out)) == after
    stats = _check_folder(out, candidates)
    assert [r["generation"] for r in stats["run"]["retries"]] == [1, 2]


def test_retry_failed_on_an_empty_folder_says_there_is_nothing_to_retry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cc = tmp_path / "cc.tsv"
    cc.write_text("a photo of a house\thttp://127.0.0.1:9/x.jpg\n")
    assert main(_args(cc, tmp_path / "nothing", "--retry-failed")) == 2
    assert "no finished or killed run" in capsys.readouterr().err


@pytest.mark.slow  # ~40 s: a killed run in a subprocess, then the retry
def test_retry_failed_on_a_killed_run_refetches_its_staged_transient_failures(
    tmp_path: Path, server: _ImageServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cc = _cc_list(tmp_path, server)
    out = tmp_path / "ds"
    # Killed once everything was fetched (the 503s are staged outcomes) and stats written.
    run_killed(_args(cc, out), "committed:*/stats.json")
    server.healed = True
    assert main(_args(cc, out, "--retry-failed")) == 0
    capsys.readouterr()
    after = _by_name(_outcomes(out))
    assert sorted(after["s503"]) == ["accepted", "duplicate_url"]
    assert after["slow"] == ["accepted"] and after["gone"] == ["http_not_found"]
    # A killed run's retry is its resume: the whole selection runs again, so the copy and
    # ok0 compete as in an uninterrupted run (one kept by dedupe's rank, the other dropped).
    assert sorted(after["copy"] + after["ok0"]) == ["accepted", "duplicate_exact"]
    stats = _check_folder(out, len(cc.read_text().splitlines()))
    assert stats["run"]["resumed"] is True


@pytest.mark.slow  # ~60 s: a first run, a retry killed in a subprocess, its resume
@pytest.mark.parametrize("point", ["committed:*-r1.parquet", "retry_written"])
def test_a_killed_retry_resumes_to_the_uninterrupted_retry(
    point: str, tmp_path: Path, server: _ImageServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cc = _cc_list(tmp_path, server)
    out = tmp_path / "ds"
    assert main(_args(cc, out)) == 0
    server.healed = True
    run_killed(_args(cc, out, "--retry-failed"), point)
    assert (out / "_staging" / "job.json").exists()
    assert main(_args(cc, out)) == 2  # without --retry-failed: refused, names the flag
    assert "--retry-failed" in capsys.readouterr().err
    assert main(_args(cc, out, "--retry-failed")) == 0
    capsys.readouterr()
    after = _by_name(_outcomes(out))
    assert sorted(after["s503"]) == ["accepted", "duplicate_url"]
    assert after["s429"] == ["accepted"]
    assert after["copy"] == ["duplicate_exact"] and after["down"] == ["http_server_error"]
    stats = _check_folder(out, len(cc.read_text().splitlines()))
    assert stats["run"]["retries"][0]["resumed"] is True


def test_which_fetch_rejects_are_transient() -> None:
    from lait.record import RejectReason as R
    from pipeline.transient import is_transient_failure

    assert is_transient_failure(R.TIMEOUT, "timed out: read timeout")
    assert is_transient_failure(R.CONNECTION_ERROR, "cannot connect: refused")
    assert is_transient_failure(R.HTTP_SERVER_ERROR, "HTTP 503")
    assert is_transient_failure("http_client_error", "HTTP 429 Too Many Requests")
    assert not is_transient_failure(R.HTTP_CLIENT_ERROR, "HTTP 403")
    assert not is_transient_failure(R.HTTP_NOT_FOUND, "HTTP 404")
    assert not is_transient_failure(R.CONNECTION_ERROR, "TLS failed: bad certificate")
    assert not is_transient_failure(R.HTTP_SERVER_ERROR, "undecodable Content-Encoding: x")
    assert not is_transient_failure(R.DUPLICATE_EXACT, None)
    assert not is_transient_failure(None, None)


def test_a_rewritten_ledger_part_takes_the_generation_once() -> None:
    from pipeline.retry import rewritten_part_stem

    assert rewritten_part_stem("rejects/00003.parquet", 1) == "00003-r1"
    assert rewritten_part_stem("rejects/00003-r1.parquet", 2) == "00003-r2"
    assert rewritten_part_stem("rejects/retry1-00000.parquet", 2) == "retry1-00000-r2"
