"""A download into a bucket, killed after some fetch batches were committed, resumes when the
same command runs again: the committed batches' URLs are not fetched again (gs:// and s3://,
against the loopback emulators of tests/object_stores.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from object_stores import ObjectStore, server, store

from lait import cli
from lait.dataset import DatasetFolder

__all__ = ["server", "store"]  # the fixtures, imported for pytest


@pytest.mark.slow  # ~1 minute per store on 2 cores
def test_a_killed_download_into_the_bucket_resumes_without_refetching(
    store: ObjectStore, capsys: pytest.CaptureFixture[str]
) -> None:
    from lait.demo_web import DemoWebServer, build_site

    site = build_site(seed=5, n_images=40, slow_delay_s=0.3)
    with DemoWebServer(site) as web:
        fs = store.filesystem()
        cc, out = store.unique_url("cc.tsv"), store.unique_url("ds")
        fs.pipe(cc, site.body(site.cc_list_path, web.base_url))
        args = ["download", "--cc", cc, "--out", out, "--allow-network", "127.0.0.1/32"]
        args += ["--no-progress", "--set", "fetch.retries=0", "--set", "clip.enabled=false"]
        args += ["--set", "fetch_threads=2", "--direct_running_mode=in_memory"]
        code = f"import sys; from lait.cli import main; sys.exit(main({args!r}))"
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        markers = f"{out}/_staging/*.outcomes.jsonl"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            fs.invalidate_cache()  # gcsfs and s3fs cache listings; another process writes
            if fs.glob(markers):
                break
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        fs.invalidate_cache()
        committed = fs.glob(markers)
        assert committed, "no fetch batch committed before the kill"
        if fs.exists(f"{out}/stats.json"):
            pytest.skip("the machine was too fast: the job finished before it could be killed")
        answered = {
            json.loads(line)["url"]
            for path in committed
            for line in fs.cat(path).decode().splitlines()
            if line.strip()
        }
        before = web.paths_requested()
        assert cli.main(args) == 0  # the same command: resumed, no --overwrite
        capsys.readouterr()
        after = web.paths_requested()
    path_of = {url: url.removeprefix(web.base_url) for url in answered}
    assert [u for u, p in path_of.items() if after[p] != before[p]] == []
    fs.invalidate_cache()
    assert not fs.exists(f"{out}/_staging")
    folder = DatasetFolder(out)
    stats = folder.stats()
    assert stats["run"]["resumed"] is True
    listed = sum(1 for line in fs.cat(cc).decode().splitlines() if line.strip())
    assert stats["candidates"] == stats["accepted"] + stats["rejected"] == listed
    keys = folder.metadata(["key"]).column(0).to_pylist()
    assert len(keys) == len(set(keys)) == stats["accepted"] > 0
