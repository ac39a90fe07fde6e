"""Launch checks of a bucket output folder: every job that writes one (crawl, download, dedupe,
pretrain) stops with one clear error naming the folder and what to do, before any work, when
the bucket does not exist, the credentials are missing, or the account may not write there.

The refusals come from real servers on loopback: gcp-storage-emulator and moto (no such
bucket, no AWS keys), and a tiny server that answers every request 403 as GCS and S3 answer an
account without permission. Missing Google credentials are a GOOGLE_APPLICATION_CREDENTIALS
naming a file that is not there, with the metadata server a closed loopback port.
"""

from __future__ import annotations

import http.server
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import fsspec
import pytest
import yaml
from object_stores import (
    ObjectStore,
    denying_server,
    loopback_only,
    no_metadata_servers,
    pointed_at,
    server,
    store,
)

from lait import cli
from lait.dataset.storage import WRITE_CHECK_NAME

__all__ = ["server", "store"]  # the fixtures, imported for pytest

COMMANDS = ("crawl", "download", "dedupe", "pretrain")


class _CountingSite(http.server.BaseHTTPRequestHandler):
    """A page and an image, and a list of every path asked for (nothing should be)."""

    fetched: ClassVar[list[str]] = []  # each test's subclass has its own

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.fetched.append(self.path)
        body = b'<img src="/1.jpg" alt="a red square on a grey background">'
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def site() -> Iterator[tuple[str, list[str]]]:
    fetched: list[str] = []
    handler = type("Site", (_CountingSite,), {"fetched": fetched})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", fetched
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small local dataset folder: dedupe's input, pretrain's data."""
    from pretrain.synthetic import write_scene_folder

    return write_scene_folder(str(tmp_path_factory.mktemp("scenes") / "web"), 8, seed=1)


def _args(command: str, out: str, site: str, scenes: str, tmp_path: Path) -> list[str]:
    """`lait COMMAND ... --out OUT` with local inputs: only the output is on the store."""
    beam = ["--direct_running_mode=in_memory"]
    if command == "crawl":
        args = ["crawl", "--pages", site, "--out", out, "--allow-network", "127.0.0.1/32"]
        return [*args, "--set", "clip.enabled=false", "--no-progress", *beam]
    if command == "download":
        listing = tmp_path / "cc.tsv"
        listing.write_text(f"a red square on a grey background\t{site}1.jpg\n")
        args = ["download", "--cc", str(listing), "--out", out, "--allow-network", "127.0.0.1/32"]
        return [*args, "--set", "clip.enabled=false", "--no-progress", *beam]
    if command == "dedupe":
        return ["dedupe", scenes, "--out", out, *beam]
    from tiny_plans import demo_clip_plan

    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(demo_clip_plan(scenes, steps=2)))
    return ["pretrain", str(plan), "--out", out, "--no-progress"]


def _launch(
    command: str,
    out: str,
    site: tuple[str, list[str]],
    scenes: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """Run the command into `out`; assert it was refused (exit 2) before any work; return the
    error it printed."""
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    assert cli.main(_args(command, out, site[0], scenes, tmp_path)) == 2
    captured = capsys.readouterr()
    assert site[1] == []  # nothing fetched
    assert list(work.glob("lait-run-*")) == []  # no run's working copy left behind
    assert captured.out == "" or "final checkpoint" not in captured.out
    error = captured.err
    assert error.startswith(f"lait {command}: error: cannot write to {out}"), error
    return error


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_a_permission_error_stops_every_job_before_any_work(
    scheme: str,
    command: str,
    site: tuple[str, list[str]],
    scenes: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with denying_server(scheme) as denied, pointed_at(denied, monkeypatch):
        out = denied.url("out")
        error = _launch(command, out, site, scenes, tmp_path, capsys, monkeypatch)
    assert "permission denied" in error and "Grant the account permission" in error
    assert ("Access Denied" if scheme == "s3" else "storage.objects.create") in error
    # The only request the store saw: the write check's probe object.
    assert len(denied.requests) == 1 and WRITE_CHECK_NAME in denied.requests[0], denied.requests


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_google_credentials_stop_every_job_before_any_work(
    command: str,
    site: tuple[str, list[str]],
    scenes: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No emulator, no token configured, GOOGLE_APPLICATION_CREDENTIALS naming a missing file
    and the metadata server unreachable: gcsfs would fall back to anonymous access; the check
    refuses instead, and nothing tries to reach Google (loopback_only)."""
    from object_stores import _gcsfs_registered

    missing = tmp_path / "no-such-key.json"
    for name, value in no_metadata_servers().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(missing))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud login either
    for name in ("STORAGE_EMULATOR_HOST", "FSSPEC_GS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(fsspec.config.conf, "gs", raising=False)
    with _gcsfs_registered(), loopback_only() as attempts:
        fsspec.get_filesystem_class("gs").clear_instance_cache()
        error = _launch(command, "gs://lait-test/out", site, scenes, tmp_path, capsys, monkeypatch)
        fsspec.get_filesystem_class("gs").clear_instance_cache()
    assert attempts == []
    assert f"GOOGLE_APPLICATION_CREDENTIALS names {missing}, which does not exist" in error
    assert "gcloud auth application-default login" in error


def test_pretrain_into_a_bucket_that_does_not_exist_is_refused_at_launch(
    store: ObjectStore,
    site: tuple[str, list[str]],
    scenes: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = f"{store.scheme}://no-such-bucket-lait/run"
    error = _launch("pretrain", out, site, scenes, tmp_path, capsys, monkeypatch)
    assert "'no-such-bucket-lait' does not exist" in error and "Create it first" in error
    assert not store.filesystem().exists(f"{store.scheme}://no-such-bucket-lait")


def test_pretrain_without_aws_keys_is_refused_at_launch(
    store: ObjectStore,
    site: tuple[str, list[str]],
    scenes: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if store.scheme != "s3":
        pytest.skip("the Google case is test_missing_google_credentials_stop_every_job...")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    error = _launch("pretrain", store.url("run"), site, scenes, tmp_path, capsys, monkeypatch)
    assert "NoCredentialsError" in error and "AWS_ACCESS_KEY_ID" in error
