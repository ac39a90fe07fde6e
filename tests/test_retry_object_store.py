"""`--retry-failed` on a dataset folder in a bucket (gs:// and s3://, against the loopback
emulators of tests/object_stores.py): the ledger parts are read and rewritten there, the
moved samples land in new shards there, and `_staging/` is gone at the end."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from object_stores import ObjectStore, server, store
from test_retry_failed import _args, _by_name, _cc_list, _ImageServer

from lait.cli import main
from lait.dataset import DatasetFolder, check_stats, compute_stats

__all__ = ["server", "store"]  # the fixtures, imported for pytest


@pytest.fixture
def images() -> Iterator[_ImageServer]:
    running = _ImageServer()
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()


def _outcomes(folder: str) -> dict[str, list[str]]:
    data = DatasetFolder(folder)
    rows = [
        (r["url"], r["caption"], "accepted") for r in data.metadata(["url", "caption"]).to_pylist()
    ]
    rows += [
        (r["url"], r["caption"], r["reject_reason"])
        for r in data.rejects(["url", "caption", "reject_reason"]).to_pylist()
    ]
    assert len({(u, c) for u, c, _ in rows}) == len(rows), "a candidate is in two places"
    return _by_name({(u.rsplit("/", 1)[-1], c): o for u, c, o in rows})


@pytest.mark.slow  # ~1 minute per store: a run and its retry
def test_retry_failed_in_a_bucket_moves_what_now_answers(
    store: ObjectStore,
    images: _ImageServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cc = _cc_list(tmp_path, images)
    out = store.unique_url("ds")
    assert main(_args(cc, out)) == 0
    images.healed = True
    assert main(_args(cc, out, "--retry-failed")) == 0
    capsys.readouterr()
    after = _outcomes(out)
    assert sorted(after["s503"]) == ["accepted", "duplicate_url"]
    assert after["slow"] == ["accepted"] and after["copy"] == ["duplicate_exact"]
    assert after["down"] == ["http_server_error"] and after["gone"] == ["http_not_found"]
    stats = DatasetFolder(out).stats()
    check_stats(stats)
    assert stats["candidates"] == len(cc.read_text().splitlines())
    assert compute_stats(out)["funnel"] == stats["funnel"]
    fs = store.filesystem()
    fs.invalidate_cache()
    assert not fs.exists(f"{out}/_staging")
    assert stats["run"]["retries"][0]["generation"] == 1
