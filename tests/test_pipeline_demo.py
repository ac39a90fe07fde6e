"""The crawl and download jobs on real Beam against the demo web, checked by its ground truth."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import webdataset as wds

from lait.cli import main
from lait.dataset import DatasetFolder, check_stats
from lait.demo_web import DemoSite, DemoWebServer, NoiseKind, build_site
from lait.record import RejectReason, Stage
from pipeline.clip import DEMO_CLIP_MODEL, ClipConfig
from pipeline.config import (
    ListSource,
    OutputConfig,
    PipelineConfig,
    SourcesConfig,
    unfiltered,
)
from pipeline.fetch import FetchConfig
from pipeline.run import run_pipeline

IN_PROCESS = ["--direct_running_mode=in_memory"]

# What each noise kind the crawl stage targets must end as.
EXPECTED_REASON = {
    NoiseKind.NOT_FOUND: "http_not_found",
    NoiseKind.TRUNCATED_IMAGE: "truncated_image",
    NoiseKind.BROKEN_IMAGE: "undecodable_image",
    NoiseKind.TOO_SMALL: "too_small",
    NoiseKind.WRONG_CONTENT_TYPE: "wrong_content_type",
    NoiseKind.HTML_AS_IMAGE: "wrong_content_type",
    NoiseKind.X_ROBOTS_NOAI: "x_robots_tag_opt_out",
    NoiseKind.X_ROBOTS_NOIMAGEAI: "x_robots_tag_opt_out",
    NoiseKind.REDIRECT_LOOP: "redirect_loop",
    NoiseKind.SLOW_RESPONSE: "timeout",
    NoiseKind.ROBOTS_DISALLOWED: "robots_txt_disallowed",
    NoiseKind.DATA_URI: "data_uri",
    NoiseKind.TRACKING_PIXEL: "tracking_pixel",
    NoiseKind.ICON: "icon",
}


@pytest.fixture(scope="module")
def site() -> DemoSite:
    return build_site(seed=3, n_images=160, slow_delay_s=1.5)


@pytest.fixture(scope="module")
def server(site: DemoSite) -> Iterator[DemoWebServer]:
    with DemoWebServer(site) as running:
        yield running


def _config(folder: Path, sources: SourcesConfig) -> PipelineConfig:
    return PipelineConfig(
        sources=sources,
        fetch=FetchConfig(
            allowed_networks=("127.0.0.1/32",),
            total_timeout_s=0.8,
            retries=0,
            respect_robots_txt=True,
        ),
        clip=ClipConfig(model=DEMO_CLIP_MODEL),  # the demo web's model, named (no default)
        output=OutputConfig(folder=str(folder), samples_per_shard=40),
    )


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory, server: DemoWebServer) -> DatasetFolder:
    folder = tmp_path_factory.mktemp("crawl") / "web"
    sources = SourcesConfig(pages=(server.index_url,), depth=1)
    run_pipeline(_config(folder, sources), IN_PROCESS, show_progress=False)
    return DatasetFolder(folder)


def _outcomes(folder: DatasetFolder) -> dict[tuple[str, str], str]:
    """(url, caption) → 'accepted' or the reject reason."""
    outcomes = {}
    for row in folder.metadata(["url", "caption"]).to_pylist():
        outcomes[(row["url"], row["caption"])] = "accepted"
    for row in folder.rejects(["url", "caption", "reject_reason"]).to_pylist():
        outcomes.setdefault((row["url"], row["caption"]), row["reject_reason"])
    return outcomes


def test_crawl_counts_add_up_and_shards_read_back(crawled: DatasetFolder) -> None:
    stats = crawled.stats()
    check_stats(stats)
    assert stats["accepted"] > 50 and stats["rejected"] > 20
    assert stats["run"]["pages"]["fetched"] >= 10
    keys = {
        sample["__key__"]
        for sample in wds.WebDataset(crawled.webdataset_urls(), shardshuffle=False)
    }
    assert len(keys) == stats["accepted"]
    widths = crawled.metadata(["width", "height", "original_width"]).to_pydict()
    assert min(widths["original_width"]) >= 300


def test_unfiltered_crawl_keeps_what_curation_drops(
    tmp_path: Path, server: DemoWebServer, crawled: DatasetFolder
) -> None:
    """The raw baseline (bench/data_value.py): no text, language, CLIP or dedupe decisions."""
    folder = tmp_path / "raw"
    sources = SourcesConfig(pages=(server.index_url,), depth=1)
    run_pipeline(unfiltered(_config(folder, sources)), IN_PROCESS, show_progress=False)
    raw = DatasetFolder(folder)
    stats = raw.stats()
    check_stats(stats)
    curation = {Stage.TEXT_FILTER, Stage.LANGUAGE, Stage.CLIP, Stage.DEDUPE}
    stages = {RejectReason(r).stage for r in raw.rejects(["reject_reason"]).column(0).to_pylist()}
    assert not stages & curation, stages
    assert stages  # extraction, fetch, decode and image-size rejects remain
    assert stats["accepted"] > crawled.stats()["accepted"]
    scores = raw.metadata(["clip_score"]).column(0).to_pylist()
    assert all(score is not None for score in scores)  # scored, not filtered
    assert min(scores) < 0.824 <= max(scores)  # it kept pairs the CLIP filter would drop


def test_every_crawl_noise_kind_gets_its_reason(
    crawled: DatasetFolder, site: DemoSite, server: DemoWebServer
) -> None:
    outcomes = _outcomes(crawled)
    checked: dict[NoiseKind, int] = {}
    clean_accepted = clean_total = 0
    for ref in site.ground_truth.references:
        if ref.source != "page":
            continue
        url = ref.url if ref.url.startswith(("http", "data:")) else server.url(ref.url)
        if url.startswith("data:"):
            matches = [
                o for (u, c), o in outcomes.items() if u.startswith("data:") and c == ref.caption
            ]
            outcome = matches[0] if matches else None
        else:
            outcome = outcomes.get((url, ref.caption))
        assert outcome is not None, f"ground-truth reference {ref.ref_id} ({url}) was lost"
        targeted = [kind for kind in ref.noise if kind in EXPECTED_REASON]
        for kind in targeted:
            assert outcome == EXPECTED_REASON[kind], (kind, url, outcome)
            checked[kind] = checked.get(kind, 0) + 1
        if ref.noise == frozenset({NoiseKind.CLEAN}):
            clean_total += 1
            clean_accepted += outcome == "accepted"
            # The crawl stages never drop a clean pair; the learned filters (CLIP, dedupe)
            # may, rarely, and say so.
            if outcome != "accepted":
                assert RejectReason(outcome).stage in (Stage.CLIP, Stage.DEDUPE), (url, outcome)
    assert set(checked) == set(EXPECTED_REASON), set(EXPECTED_REASON) - set(checked)

    # Cheap first: a pair the text or language filters reject is never downloaded (a download
    # would have recorded its size), and keeps the reason those filters gave it.
    early = [
        row
        for row in crawled.rejects(["reject_stage", "num_bytes", "sha256"]).to_pylist()
        if row["reject_stage"] in ("text_filter", "language")
    ]
    assert len(early) >= 10
    assert all(row["num_bytes"] is None and row["sha256"] is None for row in early)
    assert clean_accepted >= 0.95 * clean_total


def test_download_lists_is_deterministic(
    tmp_path: Path, site: DemoSite, server: DemoWebServer
) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    for path in (site.cc_list_path, site.sbu_urls_path, site.sbu_captions_path):
        (lists / Path(path).name).write_bytes(site.body(path, server.base_url))
    sources = SourcesConfig(
        lists=(
            ListSource(path=str(lists / "cc.tsv"), format="cc"),
            ListSource(
                path=str(lists / "sbu_urls.txt"),
                captions_path=str(lists / "sbu_captions.txt"),
                format="sbu",
            ),
        )
    )
    first = _config(tmp_path / "a", sources)
    stats = run_pipeline(first, IN_PROCESS, show_progress=False)
    check_stats(stats)
    list_refs = [r for r in site.ground_truth.references if r.source in ("cc", "sbu")]
    assert stats["candidates"] == len(list_refs)
    assert stats["by_source"]["cc"]["candidates"] == sum(r.source == "cc" for r in list_refs)
    not_found = sum(NoiseKind.NOT_FOUND in r.noise for r in list_refs)
    assert stats["reasons"].get("http_not_found") == not_found

    second = dataclasses.replace(
        first, output=dataclasses.replace(first.output, folder=str(tmp_path / "b"))
    )
    run_pipeline(second, IN_PROCESS, show_progress=False)
    names = sorted(p.name for p in (tmp_path / "a").glob("*.tar"))
    assert names and names == sorted(p.name for p in (tmp_path / "b").glob("*.tar"))
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_cli_download_on_multiprocess_direct_runner(
    tmp_path: Path, site: DemoSite, server: DemoWebServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cc = tmp_path / "cc.tsv"
    cc.write_bytes(site.body(site.cc_list_path, server.base_url))
    code = main(
        [
            "download",
            "--cc",
            str(cc),
            "--out",
            str(tmp_path / "out"),
            "--allow-network",
            "127.0.0.1/32",
            "--no-progress",
            "--set",
            "fetch.retries=0",
            "--set",
            "clip.model=lait-demo-clip",
            "--direct_num_workers=2",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "accepted" in printed and str(tmp_path / "out") in printed
    assert main(["info", str(tmp_path / "out")]) == 0
    # Deduping a folder together with itself keeps one of each and loses nothing.
    single = DatasetFolder(tmp_path / "out").stats()
    assert (
        main(
            [
                "dedupe",
                str(tmp_path / "out"),
                str(tmp_path / "out"),
                "--out",
                str(tmp_path / "dd"),
                "--direct_running_mode=in_memory",
            ]
        )
        == 0
    )
    doubled = DatasetFolder(tmp_path / "dd").stats()
    assert doubled["candidates"] == 2 * single["candidates"]
    assert doubled["accepted"] == single["accepted"]
    assert doubled["reasons"]["duplicate_url_caption"] == single["accepted"]
    # A second run into the same folder is refused unless asked to overwrite.
    again = ["download", "--cc", str(cc), "--out", str(tmp_path / "out")]
    assert main([*again, "--set", "clip.model=lait-demo-clip"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_fetcher_refuses_private_addresses_by_default(
    tmp_path: Path, server: DemoWebServer
) -> None:
    # Without --allow-network the loopback demo web is refused before any connection.
    config = dataclasses.replace(
        _config(tmp_path / "ds", SourcesConfig(pages=(server.index_url,))),
        fetch=FetchConfig(retries=0),
    )
    before = server.requests_served
    stats = run_pipeline(config, IN_PROCESS, show_progress=False)
    assert stats["candidates"] == 0 and stats["run"]["pages"] == {"blocked_address": 1}
    assert server.requests_served == before


def test_killed_job_rerun_loses_and_duplicates_nothing(
    tmp_path: Path, site: DemoSite, server: DemoWebServer
) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    cc = tmp_path / "cc.tsv"
    cc.write_bytes(site.body(site.cc_list_path, server.base_url))

    def command(out: Path, *extra: str) -> list[str]:
        args = [
            "download",
            "--cc",
            str(cc),
            "--out",
            str(out),
            "--allow-network",
            "127.0.0.1/32",
            "--no-progress",
            "--set",
            "fetch.retries=0",
            "--set",
            "clip.model=lait-demo-clip",
            "--set",
            "output.samples_per_shard=1",
            "--set",
            "fetch_threads=2",  # small fetch batches, committed one by one: a wide window
            "--direct_running_mode=in_memory",
            *extra,
        ]
        return [
            sys.executable,
            "-c",
            f"import sys; from lait.cli import main; sys.exit(main({args!r}))",
        ]

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        command(killed),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill it once some fetch batches are committed (their outcome files are the markers).
    staging = killed / "_staging"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(staging.glob("*.outcomes.jsonl")):
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and its Beam workers
    process.wait()
    committed = list(staging.glob("*.outcomes.jsonl"))
    assert committed, "the job committed no fetch batch before it was killed"
    if (killed / "stats.json").exists():
        pytest.skip("the machine was too fast: the job finished before it could be killed")
    answered = {
        json.loads(line)["url"] for path in committed for line in path.read_text().splitlines()
    }
    # Whatever was committed is whole: every tar present reads back completely.
    partial = DatasetFolder(killed)
    assert all(sample.image for sample in partial.iter_samples())

    # The same command again resumes: the URLs the committed batches answered are not fetched.
    before = server.paths_requested()
    rerun_run = subprocess.run(command(killed), capture_output=True, text=True)
    assert rerun_run.returncode == 0, rerun_run.stderr[-2000:]
    # The summary reaches stdout (img2dataset's resizer, used from many threads, once left the
    # process's stdout pointing at /dev/null).
    assert "accepted" in rerun_run.stdout and str(killed) in rerun_run.stdout
    after = server.paths_requested()
    refetched = [
        u
        for u in answered
        if after[u.removeprefix(server.base_url)] != before[u.removeprefix(server.base_url)]
    ]
    assert refetched == []
    assert not (killed / "_staging").exists()  # removed once the dataset is written
    assert DatasetFolder(killed).stats()["run"]["resumed"] is True
    clean = tmp_path / "clean"
    assert subprocess.run(command(clean), capture_output=True).returncode == 0
    names = sorted(p.name for p in clean.iterdir() if p.suffix in (".tar", ".parquet"))
    assert names == sorted(p.name for p in killed.iterdir() if p.suffix in (".tar", ".parquet"))
    for name in names:
        assert (clean / name).read_bytes() == (killed / name).read_bytes(), name
    rerun, fresh = DatasetFolder(killed).stats(), DatasetFolder(clean).stats()
    assert rerun["funnel"] == fresh["funnel"]
    assert rerun["candidates"] == sum(1 for line in cc.read_text().splitlines() if line.strip())
    # A finished folder is not resumed: a third run is refused without --overwrite.
    assert subprocess.run(command(killed), capture_output=True).returncode == 2


def test_an_unfinished_run_with_other_fetch_settings_is_refused(tmp_path: Path) -> None:
    from pipeline.run import UnfinishedRunError, prepare_output
    from pipeline.staging import read_job

    config = _config(tmp_path / "ds", SourcesConfig(pages=("http://127.0.0.1:9/",)))
    assert prepare_output(config) is False  # a fresh folder: the job's settings recorded
    assert read_job(str(tmp_path / "ds")) is not None
    assert prepare_output(config) is True  # killed before stats.json: resumed
    other = dataclasses.replace(config, fetch=dataclasses.replace(config.fetch, retries=3))
    with pytest.raises(UnfinishedRunError, match="--overwrite"):
        prepare_output(other)
    overwrite = dataclasses.replace(
        config, output=dataclasses.replace(config.output, overwrite=True)
    )
    assert prepare_output(overwrite) is False


def test_crawl_from_a_warc_file(tmp_path: Path, site: DemoSite, server: DemoWebServer) -> None:
    import io

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    page = site.page_paths[1]
    body = site.body(page, server.base_url)
    warc = tmp_path / "crawl.warc.gz"
    with warc.open("wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
        writer.write_record(
            writer.create_warc_record(
                server.url(page),
                "response",
                payload=io.BytesIO(body),
                length=len(body),
                http_headers=headers,
            )
        )
    stats = run_pipeline(
        _config(tmp_path / "ds", SourcesConfig(warc=(str(warc),))), IN_PROCESS, show_progress=False
    )
    check_stats(stats)
    on_page = [r for r in site.ground_truth.references if r.page_url == page]
    assert stats["by_source"]["warc"]["candidates"] >= len(on_page) > 0
    assert stats["accepted"] >= sum(r.noise == frozenset({NoiseKind.CLEAN}) for r in on_page)
    assert stats["run"]["pages"] == {"from_warc": 1}
