"""A `lait download` / `lait crawl` killed (SIGKILL of its process group) at a named point, then
rerun with the same command, ends with the dataset an uninterrupted run writes.

The kill is deterministic: the job runs with `LAIT_KILL_AT=POINT` (`lait.kill_points`) and
kills itself the first time it reaches the point: while fetching, right after the first shard
tar is committed (its parquet not yet), while a parquet is a hidden partial, after the ledger,
while stats.json is partial, after stats.json but before the launcher's run information,
after that but before the staging folder is removed, and half-way through that removal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lait_runs import loopback_args, run_killed

from lait.cli import main
from lait.dataset import DatasetFolder, check_stats
from lait.demo_web import DemoSite, DemoWebServer, build_site

# Each case runs the job twice (~30-50 s on 2 loaded cores); the default suite kills at the
# issue's case, the rest run with the slow tests (tests/test_pipeline_demo.py also kills one
# during the fetch by default).
FAST_POINTS = [
    "committed:*.tar",  # the first shard tar committed, its parquet and stats not
]
SLOW_POINTS = [
    "committed:*.outcomes.jsonl",  # during the fetch: some batches committed
    "committed:*/stats.json",  # the job's stats.json written, the launcher's run info not
    "before_commit:*/ds/[0-9]*.parquet",  # a tar beside its hidden .partial parquet
    "committed:*/rejects/*.parquet",  # during the ledger write
    "before_commit:*/stats.json",  # stats.json still a hidden partial
    "run_info_added",  # stats.json complete, _staging/ not yet removed
    "staging_outcomes_removed",  # half-way through removing _staging/
]


@pytest.fixture(scope="module")
def site() -> DemoSite:
    return build_site(seed=11, n_images=40, slow_delay_s=1.0)


@pytest.fixture(scope="module")
def server(site: DemoSite) -> Iterator[DemoWebServer]:
    with DemoWebServer(site) as running:
        yield running


@pytest.fixture(scope="module")
def cc_list(
    tmp_path_factory: pytest.TempPathFactory, site: DemoSite, server: DemoWebServer
) -> Path:
    path = tmp_path_factory.mktemp("lists") / "cc.tsv"
    path.write_bytes(site.body(site.cc_list_path, server.base_url))
    return path


# Small fetch batches, committed one by one; one process, so a kill point's count is the job's.
_SETTINGS = {
    "fetch.retries": 0,
    "fetch.total_timeout_s": 0.5,
    "clip.enabled": "false",
    "output.samples_per_shard": 4,
    "fetch_threads": 2,
}
_ONE_PROCESS = "--direct_running_mode=in_memory"


def _download_args(cc: Path, out: Path, *extra: str) -> list[str]:
    settings = {**_SETTINGS, "output.rejects_per_part": 3}
    return loopback_args("download", ["--cc", str(cc)], out, settings, _ONE_PROCESS, *extra)


def _crawl_args(server: DemoWebServer, out: Path) -> list[str]:
    pages = ["--pages", server.index_url, "--depth", "1"]
    return loopback_args("crawl", pages, out, _SETTINGS, _ONE_PROCESS)


def _uninterrupted(args: list[str], capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(args) == 0
    capsys.readouterr()
    return Path(args[args.index("--out") + 1])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, cc_list: Path) -> Path:
    out = tmp_path_factory.mktemp("reference") / "ds"
    assert main(_download_args(cc_list, out)) == 0
    return out


def dataset_view(folder: Path) -> dict[str, Any]:
    """What must equal between a resumed run and an uninterrupted one."""
    data = DatasetFolder(folder)
    stats = data.stats()
    check_stats(stats)
    keys = data.metadata(["key"]).column(0).to_pylist()
    assert len(keys) == len(set(keys)), "a key was written twice"
    ledger = sorted(
        (row["key"], row["sighting_id"] or "", row["reject_reason"], row["reject_detail"] or "")
        for row in data.rejects(
            ["key", "sighting_id", "reject_reason", "reject_detail"]
        ).to_pylist()
    )
    assert len({(k, s) for k, s, _, _ in ledger}) == len(ledger), "a sighting ledgered twice"
    files = {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and path.suffix in (".tar", ".parquet")
    }
    return {
        "accepted": sorted(keys),
        "ledger": ledger,
        "funnel": stats["funnel"],
        "candidates": stats["candidates"],
        "files": files,
    }


def assert_clean(folder: Path) -> None:
    """No partial file, no staging folder, anywhere in the folder."""
    leftovers = [p.name for p in folder.rglob("*") if p.name.startswith(".")]
    assert leftovers == [], f"partial files left: {leftovers}"
    assert not (folder / "_staging").exists()


def _resume_and_compare(
    args: list[str], reference: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _uninterrupted(args, capsys)  # the same command again: resumes, no --overwrite
    assert_clean(out)
    assert DatasetFolder(out).stats()["run"]["resumed"] is True
    resumed, fresh = dataset_view(out), dataset_view(reference)
    assert resumed["accepted"] == fresh["accepted"]
    assert resumed["ledger"] == fresh["ledger"]
    assert resumed["funnel"] == fresh["funnel"]
    assert sorted(resumed["files"]) == sorted(fresh["files"])
    for name, data in fresh["files"].items():
        assert resumed["files"][name] == data, f"{name} differs from the uninterrupted run's"


def _killed_folder_state(out: Path, point: str) -> None:
    """What a kill at `point` must have left (so the test proves it killed where it says)."""
    staging = out / "_staging"
    assert (staging / "job.json").exists(), "an unfinished run keeps its job.json"
    if point == "committed:*.tar":
        tars = sorted(out.glob("*.tar"))
        assert len(tars) == 1 and not tars[0].with_suffix(".parquet").exists()
    if point.startswith("before_commit:") and point.endswith(".parquet"):
        assert [p for p in out.glob(".*.parquet.*.partial")], "no partial parquet left"
    if point == "run_info_added":
        assert "run" in DatasetFolder(out).stats()


@pytest.mark.parametrize(
    "point", FAST_POINTS + [pytest.param(p, marks=pytest.mark.slow) for p in SLOW_POINTS]
)
def test_a_download_killed_at_a_point_resumes_to_the_uninterrupted_dataset(
    point: str,
    tmp_path: Path,
    cc_list: Path,
    reference: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = _download_args(cc_list, tmp_path / "ds")
    run_killed(args, point)
    _killed_folder_state(tmp_path / "ds", point)
    _resume_and_compare(args, reference, capsys)


@pytest.mark.slow  # ~90 s: two crawls and a resume
def test_a_crawl_killed_after_its_first_shard_resumes_to_the_uninterrupted_dataset(
    tmp_path: Path, server: DemoWebServer, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = _uninterrupted(_crawl_args(server, tmp_path / "reference" / "ds"), capsys)
    args = _crawl_args(server, tmp_path / "ds")
    run_killed(args, "committed:*.tar")
    _killed_folder_state(tmp_path / "ds", "committed:*.tar")
    _resume_and_compare(args, reference, capsys)


@pytest.mark.slow  # ~40 s
def test_a_finished_folder_is_refused_and_overwrite_starts_from_zero(
    tmp_path: Path,
    cc_list: Path,
    server: DemoWebServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = _download_args(cc_list, tmp_path / "ds")
    run_killed(args, "committed:*.tar")
    answered = {
        json.loads(line)["url"].removeprefix(server.base_url)
        for path in (tmp_path / "ds" / "_staging").glob("*.outcomes.jsonl")
        for line in path.read_text().splitlines()
    }
    before = server.paths_requested()
    out = _uninterrupted([*args, "--overwrite"], capsys)
    after = server.paths_requested()
    # From zero: every URL the killed run had answered is requested again.
    assert answered and [p for p in answered if after[p] == before[p]] == []
    assert DatasetFolder(out).stats()["run"]["resumed"] is False
    assert_clean(out)
    # Finished: the same command is refused ("not empty ... --overwrite").
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_a_timeout_detail_is_the_same_on_every_fetch() -> None:
    # urllib3 names the read budget left, which differs on every fetch; a rerun's ledger
    # (and so a resumed run's) must not.
    from lait.record import deterministic_detail

    one = "timed out: Pool(host='127.0.0.1', port=1): Read timed out. (read timeout=0.48344)"
    two = "timed out: Pool(host='127.0.0.1', port=1): Read timed out. (read timeout=0.4998)"
    assert deterministic_detail(one) == deterministic_detail(two)
    assert deterministic_detail(one) == one.replace("timeout=0.48344", "timeout")
