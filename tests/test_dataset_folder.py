from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import webdataset as wds
from PIL import Image

from lait.dataset import (
    DatasetFolder,
    DatasetWriteError,
    DatasetWriter,
    StatsMismatchError,
    check_stats,
    compute_stats,
    storage,
    write_shard,
)
from lait.record import Record, RejectReason

Make = Callable[[int], Record]
MakeRejected = Callable[[int, RejectReason], Record]

REASONS = [RejectReason.TOO_SMALL, RejectReason.HTTP_NOT_FOUND, RejectReason.WRONG_LANGUAGE]


def _write_demo_folder(
    folder: Path | str, make_accepted: Make, make_rejected: MakeRejected
) -> None:
    with DatasetWriter(folder, samples_per_shard=4, rejects_per_part=3) as writer:
        for i in range(10):
            writer.write(make_accepted(i))
        for i in range(7):
            writer.write(make_rejected(i, REASONS[i % 3]))


def test_round_trip_with_our_reader(
    tmp_path: Path, make_accepted: Make, make_rejected: MakeRejected
) -> None:
    _write_demo_folder(tmp_path / "ds", make_accepted, make_rejected)
    folder = DatasetFolder(tmp_path / "ds")
    assert folder.shard_ids() == [0, 1, 2]
    samples = list(folder.iter_samples())
    expected = {r.key: r for r in (make_accepted(i) for i in range(10))}
    assert {s.key for s in samples} == set(expected)
    for sample in samples:
        assert sample.record() == expected[sample.key]
        assert sample.caption == expected[sample.key].caption
        assert Image.open(io.BytesIO(sample.image)).size == (320, 320)
    assert folder.sizes() == {"00000.tar": 4, "00001.tar": 4, "00002.tar": 2}
    assert len(folder) == 10


def test_shards_read_back_with_webdataset(
    tmp_path: Path, make_accepted: Make, make_rejected: MakeRejected
) -> None:
    _write_demo_folder(tmp_path / "ds", make_accepted, make_rejected)
    folder = DatasetFolder(tmp_path / "ds")
    urls = folder.webdataset_urls()
    assert urls.endswith("{00000..00002}.tar")
    dataset = wds.WebDataset(urls, shardshuffle=False).decode("pil")
    seen = {}
    for sample in dataset:
        assert isinstance(sample["jpg"], Image.Image)
        seen[sample["__key__"]] = (sample["txt"], sample["json"])
    expected = {r.key: r for r in (make_accepted(i) for i in range(10))}
    assert set(seen) == set(expected)
    for key, (caption, metadata) in seen.items():
        assert caption == expected[key].caption
        assert metadata["url"] == expected[key].url and metadata["status"] == "accepted"


def test_parquet_reads_with_duckdb_and_pandas_by_glob(
    tmp_path: Path, make_accepted: Make, make_rejected: MakeRejected
) -> None:
    import duckdb

    folder = tmp_path / "ds"
    _write_demo_folder(folder, make_accepted, make_rejected)
    rows, keys = duckdb.sql(
        f"SELECT count(*), count(DISTINCT key) FROM read_parquet('{folder}/*.parquet')"
    ).fetchone()  # type: ignore[misc]
    assert rows == keys == 10  # every accepted sample of the 3 shards, once
    reasons = dict(
        duckdb.sql(
            f"SELECT reject_reason, count(*) FROM read_parquet('{folder}/rejects/*.parquet') "
            "GROUP BY reject_reason"
        ).fetchall()
    )
    assert reasons == {"too_small": 3, "http_not_found": 2, "wrong_language": 2}
    # pandas takes the shard files as a list (a bare folder also holds the tars).
    meta = pd.read_parquet(sorted(str(p) for p in folder.glob("*.parquet")))
    assert sorted(meta["key"]) == sorted(
        k for (k,) in duckdb.sql(f"SELECT key FROM read_parquet('{folder}/*.parquet')").fetchall()
    )


def test_parquet_reads_with_pandas_and_stats_add_up(
    tmp_path: Path, make_accepted: Make, make_rejected: MakeRejected
) -> None:
    _write_demo_folder(tmp_path / "ds", make_accepted, make_rejected)
    meta = pd.read_parquet(tmp_path / "ds" / "00000.parquet")
    assert len(meta) == 4 and "image" not in meta.columns
    assert set(meta["status"]) == {"accepted"}
    rejects = pd.concat(
        pd.read_parquet(p) for p in sorted((tmp_path / "ds" / "rejects").glob("*.parquet"))
    )
    assert len(rejects) == 7
    assert rejects["reject_reason"].value_counts().to_dict() == {
        "too_small": 3,
        "http_not_found": 2,
        "wrong_language": 2,
    }

    stats = json.loads((tmp_path / "ds" / "stats.json").read_text())
    check_stats(stats)
    assert (stats["candidates"], stats["accepted"], stats["rejected"]) == (17, 10, 7)
    by_stage = {step["stage"]: step for step in stats["funnel"]}
    assert by_stage["fetch"]["reasons"] == {"http_not_found": 2}
    assert by_stage["image_filter"]["rejected"] == 3
    assert stats["funnel"][-1]["out"] == 10

    broken = dict(stats, accepted=11)
    with pytest.raises(StatsMismatchError):
        check_stats(broken)


def test_rerun_writes_identical_bytes(
    tmp_path: Path, make_accepted: Make, make_rejected: MakeRejected
) -> None:
    _write_demo_folder(tmp_path / "a", make_accepted, make_rejected)
    _write_demo_folder(tmp_path / "b", make_accepted, make_rejected)
    for name in ["00000.tar", "00001.tar", "00002.tar", "00000.parquet", "sizes.json"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_bad_records_are_refused_with_clear_errors(tmp_path: Path, make_accepted: Make) -> None:
    record = make_accepted(0)
    with pytest.raises(DatasetWriteError, match="duplicate key"):
        write_shard(str(tmp_path), 0, [record, record])
    from dataclasses import replace

    with pytest.raises(DatasetWriteError, match=r"no '\.'"):
        write_shard(str(tmp_path), 0, [replace(record, key="a.b")])
    with pytest.raises(DatasetWriteError, match="format"):
        write_shard(str(tmp_path), 0, [replace(record, image_format="gif")])
    assert not list(tmp_path.glob("*.tar"))
    with (
        DatasetWriter(tmp_path / "w") as writer,
        pytest.raises(DatasetWriteError, match="accepted twice"),
    ):
        writer.write(record)
        writer.write(record)


def test_existing_folder_needs_overwrite(
    tmp_path: Path, make_accepted: Make, make_rejected: MakeRejected
) -> None:
    _write_demo_folder(tmp_path / "ds", make_accepted, make_rejected)
    (tmp_path / "ds" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        DatasetWriter(tmp_path / "ds")
    with DatasetWriter(tmp_path / "ds", overwrite=True) as writer:
        writer.write(make_accepted(99))
    assert DatasetFolder(tmp_path / "ds").shard_ids() == [0]
    assert (tmp_path / "ds" / "notes.txt").read_text() == "mine"  # not ours: kept
    assert not (tmp_path / "ds" / "rejects").exists()


def test_failed_write_leaves_no_partial_shard(tmp_path: Path) -> None:
    fs, root = storage.filesystem(tmp_path)
    with pytest.raises(RuntimeError), storage.atomic_output(fs, f"{root}/00000.tar") as out:
        out.write(b"half a shard")
        raise RuntimeError("disk on fire")
    assert os.listdir(tmp_path) == []


_SLOW_WRITER = textwrap.dedent(
    """
    import dataclasses, sys
    from lait.dataset import DatasetWriter
    from lait.record import CaptionSource, Record

    folder = sys.argv[1]
    records = []
    for i in range(400):
        r = Record.candidate(source="t", url=f"u{i}", caption="c", caption_source=CaptionSource.ALT)
        image = b"\\xff" * 500_000
        records.append(dataclasses.replace(r, image=image, image_format="jpg").accepted())
    writer = DatasetWriter(folder, samples_per_shard=400)
    print("ready", flush=True)
    writer.write_all(records)  # one 200 MB shard: long enough to be killed in the middle
    writer.close()
    """
)


def test_killed_writer_leaves_no_partial_shard(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    temporaries: list[Path] = []
    while time.monotonic() < deadline and not temporaries:
        temporaries = [p for p in folder.glob(".*") if p.stat().st_size > 1_000_000]
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert temporaries, "the writer never started its shard"
    assert not list(folder.glob("*.tar")) and not list(folder.glob("*.parquet"))
    assert DatasetFolder(folder).shard_ids() == []
    # The next run into that folder clears the leftovers.
    with DatasetWriter(folder, overwrite=True):
        pass
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "sizes.json", "stats.json"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_committed_files_get_the_umask_mode(
    tmp_path: Path, make_accepted: Make, make_rejected: MakeRejected, umask: int, mode: int
) -> None:
    previous = os.umask(umask)
    try:
        _write_demo_folder(tmp_path / "ds", make_accepted, make_rejected)
    finally:
        os.umask(previous)
    files = [p for p in (tmp_path / "ds").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"00000.tar", "00000.parquet", "stats.json", "sizes.json"}
    assert any(p.parent.name == "rejects" for p in files)
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(mode)}, modes


def test_lait_info_exits_cleanly_every_time(
    tmp_path: Path, make_accepted: Make, make_rejected: MakeRejected
) -> None:
    # Parquet read through Python file objects could abort the interpreter at exit
    # (SIGABRT, "terminate called without an active exception", apache/arrow#34314)
    # about one run in thirty, after printing the right answer.
    _write_demo_folder(tmp_path / "ds", make_accepted, make_rejected)
    lait = "import sys; from lait.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", lait, "info", str(tmp_path / "ds")]
    failures = []
    for _ in range(30):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or "accepted           10" not in done.stdout:
            failures.append((done.returncode, done.stderr[-300:]))
    assert failures == []


def test_folder_on_an_fsspec_store_reads_and_counts(
    tmp_path: Path, make_accepted: Make, make_rejected: MakeRejected
) -> None:
    # Parquet is read by path through pyarrow's filesystem; a non-local fsspec store (here
    # fsspec's in-memory one, standing in for gs:// or s3://) must still work.
    url = f"memory://lait-{tmp_path.name}/ds"
    _write_demo_folder(url, make_accepted, make_rejected)
    folder = DatasetFolder(url)
    assert folder.metadata(["key"]).num_rows == 10
    assert folder.rejects().num_rows == 7
    assert folder.sizes() == {"00000.tar": 4, "00001.tar": 4, "00002.tar": 2}
    assert compute_stats(url)["accepted"] == 10
    assert len(list(folder.iter_samples())) == 10


def test_lait_info_on_a_run_that_accepted_nothing(
    tmp_path: Path,
    make_accepted: Make,
    make_rejected: MakeRejected,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """0 samples is a valid outcome whose counts add up: info says so and exits 0."""
    from lait.cli import main

    with DatasetWriter(tmp_path / "none", rejects_per_part=3) as writer:
        for i in range(5):
            writer.write(make_rejected(i, REASONS[i % 3]))
    assert main(["info", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert "shards: 0" in out and "open_clip" not in out
    # Beside a folder with shards, the mix names only that one.
    _write_demo_folder(tmp_path / "some", make_accepted, make_rejected)
    assert main(["info", str(tmp_path / "none"), str(tmp_path / "some")]) == 0
    out = capsys.readouterr().out
    assert "open_clip" in out and str(tmp_path / "some") in out.split("open_clip")[1]
    assert str(tmp_path / "none") not in out.split("open_clip")[1]
