"""Dataset folders on gs:// and s3://, against real API servers on loopback.

gcp-storage-emulator (GCS JSON API) and moto's S3 server start once per module on free
127.0.0.1 ports (tests/object_stores.py); each test points fsspec at one of them through the
environment, as a user's shell would, and `loopback_only` fails the test on any attempt to
resolve or reach another address (a credentials lookup, a metadata server).
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import pytest
import yaml
from object_stores import ObjectStore, server, store

from lait import cli
from lait.dataset import DatasetFolder, DatasetWriter, OutputLocationError, prepare_folder
from lait.record import Record, RejectReason

__all__ = ["server", "store"]  # the fixtures, imported for pytest

Make = Callable[[int], Record]
MakeRejected = Callable[[int, RejectReason], Record]


def _write_folder(url: str, make_accepted: Make, make_rejected: MakeRejected) -> None:
    with DatasetWriter(url, samples_per_shard=4, rejects_per_part=3) as writer:
        for i in range(10):
            writer.write(make_accepted(i))
        for i in range(5):
            writer.write(make_rejected(i, RejectReason.TOO_SMALL))


def test_dataset_folder_round_trip_info_and_report(
    store: ObjectStore,
    make_accepted: Make,
    make_rejected: MakeRejected,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = store.unique_url("ds")
    _write_folder(url, make_accepted, make_rejected)

    folder = DatasetFolder(url)
    assert folder.shard_ids() == [0, 1, 2]
    assert {s.key for s in folder.iter_samples()} == {make_accepted(i).key for i in range(10)}

    assert cli.main(["info", url, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["accepted"] == 10 and stats["rejected"] == 5

    assert cli.main(["report", url]) == 0
    fs = store.filesystem()
    names = {path.rsplit("/", 1)[-1] for path in fs.ls(url, detail=False)}
    assert {"report.html", "report.json", "stats.json", "00000.tar", "00002.parquet"} <= names
    assert b"<html" in fs.cat(f"{url}/report.html")[:2000].lower()
    # Nothing uncommitted stays behind in the bucket.
    assert not [n for n in names if n.endswith(".partial")]


def test_a_shard_killed_mid_write_leaves_no_object(
    store: ObjectStore, make_accepted: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer dies inside shard 1's tar, after some of its members went out: the bucket
    holds shard 0 whole and nothing at all of shard 1 (no object under its name, no staging)."""
    from lait.dataset import writer as writer_module

    url = store.unique_url("killed")
    real_member = writer_module._member
    members: list[str] = []

    class Killed(Exception):
        pass

    def dying_member(name: str, data: bytes) -> object:
        members.append(name)
        if len(members) == 4 * 3 + 5:  # shard 0's 12 members, then 5 of shard 1's
            raise Killed
        return real_member(name, data)

    monkeypatch.setattr(writer_module, "_member", dying_member)
    with pytest.raises(Killed), DatasetWriter(url, samples_per_shard=4) as writer:
        for i in range(8):
            writer.write(make_accepted(i))

    fs = store.filesystem()
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.find(url))
    assert {"00000.tar", "00000_stats.json", "00000.parquet"} <= set(names)
    assert not [n for n in names if n.startswith("00001")], names
    assert not [n for n in names if n.endswith(".partial")], names
    assert DatasetFolder(url).metadata(["key"]).num_rows == 4


def _distinct_jpeg(number: int) -> bytes:
    """A 320x320 JPEG of random 8x8 blocks drawn from `number`: images of different numbers
    are no perceptual duplicates (one-colour squares all share a pHash)."""
    import io

    import numpy as np
    from PIL import Image

    blocks = np.random.default_rng(number).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize((320, 320), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class _Site(http.server.BaseHTTPRequestHandler):
    """One page of two images: a web to crawl into the bucket."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.endswith(".jpg"):
            number = int(self.path.rsplit("/", 1)[-1].split(".")[0])
            content_type, body = "image/jpeg", _distinct_jpeg(number)
        else:
            body = b"".join(
                b'<img src="/%d.jpg" alt="a red square on a grey background, %d">' % (i, i)
                for i in (1, 2)
            )
            content_type = "text/html"
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def site() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_crawl_writes_its_dataset_folder_into_the_bucket(store: ObjectStore, site: str) -> None:
    url = store.unique_url("crawl")
    args = ["crawl", "--pages", site, "--out", url, "--allow-network", "127.0.0.1/32"]
    args += ["--set", "clip.enabled=false", "--no-progress", "--direct_running_mode=in_memory"]
    assert cli.main(args) == 0
    folder = DatasetFolder(url)
    stats = folder.stats()
    assert stats["candidates"] == stats["accepted"] + stats["rejected"] == 2, stats
    assert len(folder) == stats["accepted"] == 2, stats["reasons"]  # CLIP off: both pass
    assert {s.caption for s in folder.iter_samples()} == {
        f"a red square on a grey background, {i}" for i in (1, 2)
    }
    names = {p.rsplit("/", 1)[-1] for p in store.filesystem().ls(url, detail=False)}
    assert {"stats.json", "sizes.json", "README.md"} <= names


def test_a_bucket_that_does_not_exist_stops_the_crawl_before_any_work(
    store: ObjectStore, site: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fetched: list[str] = []
    original = _Site.do_GET

    def counting_get(self: _Site) -> None:
        fetched.append(self.path)
        original(self)

    url = f"{store.scheme}://no-such-bucket-lait/ds"
    args = ["crawl", "--pages", site, "--out", url, "--allow-network", "127.0.0.1/32"]
    args += ["--set", "clip.enabled=false", "--no-progress", "--direct_running_mode=in_memory"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_Site, "do_GET", counting_get)
        assert cli.main(args) == 2
    error = capsys.readouterr().err
    assert f"cannot write to {url}" in error and "'no-such-bucket-lait' does not exist" in error
    assert "Create it first" in error
    assert fetched == []  # nothing fetched
    # ... and the bucket was not created on the way (makedirs would on both stores).
    assert not store.filesystem().exists(f"{store.scheme}://no-such-bucket-lait")


def test_an_output_check_leaves_the_folder_as_it_was(store: ObjectStore) -> None:
    url = store.unique_url("checked")
    prepare_folder(url, overwrite=False)
    assert store.filesystem().find(url) == []  # the probe object is gone
    prepare_folder(url, overwrite=False)  # still empty: a second launch is not refused


def test_missing_s3_credentials_name_the_path_and_what_to_set(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    if store.scheme != "s3":
        pytest.skip("gcsfs falls back to anonymous access, which the emulator allows")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    url = store.unique_url("nocreds")
    with pytest.raises(OutputLocationError) as raised:
        prepare_folder(url, overwrite=False)
    message = str(raised.value)
    assert f"cannot write to {url}" in message
    assert "AWS_ACCESS_KEY_ID" in message and "Application Default Credentials" in message


@pytest.mark.slow  # 30-80 s on a shared 2-core machine
def test_pretrain_reads_its_shards_from_the_bucket_and_evaluate_too(
    store: ObjectStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """20 steps of `lait pretrain` whose plan names a bucket folder (the run folder local),
    then `lait evaluate` on it, from the local checkpoint and from a copy in the bucket."""
    from tiny_plans import demo_clip_plan

    from pretrain.synthetic import write_scene_folder

    url = write_scene_folder(store.unique_url("scenes"), 24, seed=1, samples_per_shard=12)
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(demo_clip_plan(url, steps=20)))
    run = tmp_path / "run"
    assert cli.main(["pretrain", str(plan), "--out", str(run), "--no-progress"]) == 0
    final = run / "01-web" / "final"
    assert f"final checkpoint: {final}" in capsys.readouterr().out
    log = [json.loads(line) for line in (run / "01-web" / "log.jsonl").read_text().splitlines()]
    assert max(entry.get("step", 0) for entry in log) == 20
    args = ["evaluate", str(final), url, "--max-samples", "12", "--top-k", "4"]
    assert cli.main(args) == 0
    assert "R@1" in capsys.readouterr().out
    # The checkpoint itself from the bucket: copied down, evaluated, the same figures.
    remote = store.unique_url("final")
    store.filesystem().put(str(final) + "/", remote + "/", recursive=True)
    local = cli.main([*args[:1], remote, *args[2:], "--json"])
    bucket_figures = json.loads(capsys.readouterr().out)
    assert local == 0 and cli.main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == bucket_figures


def _fresh_listing(fs: fsspec.AbstractFileSystem, pattern: str) -> list[str]:
    fs.invalidate_cache()  # s3fs and gcsfs cache listings; another process is writing
    return list(fs.glob(pattern))


@pytest.mark.slow  # 30-80 s on a shared 2-core machine
def test_a_download_killed_writing_to_the_bucket_reruns_to_a_whole_dataset(
    store: ObjectStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """README's Dataflow command on the local runner: `lait download --cc BUCKET/cc.tsv --out
    BUCKET/ds`, killed (SIGKILL, launcher and workers) once a shard is in the bucket, then
    rerun into the same folder: nothing partial was ever visible, and the rerun's dataset
    holds every candidate once."""
    from lait.demo_web import DemoWebServer, build_site

    site = build_site(seed=3, n_images=40, slow_delay_s=0.3)
    with DemoWebServer(site) as web:
        fs = store.filesystem()
        cc, out = store.unique_url("cc.tsv"), store.unique_url("ds")
        fs.pipe(cc, site.body(site.cc_list_path, web.base_url))
        args = ["download", "--cc", cc, "--out", out, "--allow-network", "127.0.0.1/32"]
        args += ["--no-progress", "--set", "fetch.retries=0", "--set", "clip.enabled=false"]
        args += ["--set", "output.samples_per_shard=1", "--direct_running_mode=in_memory"]
        code = f"import sys; from lait.cli import main; sys.exit(main({args!r}))"
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _fresh_listing(fs, f"{out}/*.tar"):
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        fs.invalidate_cache()
        names = [p.rsplit("/", 1)[-1] for p in fs.find(out)]
        assert any(n.endswith(".tar") for n in names), "no shard committed before the kill"
        if "stats.json" in names:
            pytest.skip("the machine was too fast: the job finished before it could be killed")
        assert not [n for n in names if n.endswith(".partial")], names
        assert all(sample.image for sample in DatasetFolder(out).iter_samples())

        assert cli.main([*args, "--overwrite"]) == 0
        capsys.readouterr()
    folder = DatasetFolder(out)
    stats = folder.stats()
    listed = sum(1 for line in fs.cat(cc).decode().splitlines() if line.strip())
    assert stats["candidates"] == stats["accepted"] + stats["rejected"] == listed
    keys = folder.metadata(["key"]).column(0).to_pylist()
    assert len(keys) == len(set(keys)) == stats["accepted"] > 0


def test_dedupe_and_featurize_read_and_write_the_bucket(
    store: ObjectStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lait dedupe` from two bucket folders into a third (the same scenes twice: half go),
    then `featurize_dataset` writes its region sidecars beside the bucket folder's shards."""
    from pretrain.featurize import featurize_dataset
    from pretrain.regions import ClipGridRegions
    from pretrain.synthetic import tiny_clip, write_scene_folder

    first, second, out = (store.unique_url(name) for name in ("a", "b", "deduped"))
    for folder in (first, second):
        write_scene_folder(folder, 8, seed=4, samples_per_shard=4, image_size=64)
    args = ["dedupe", first, second, "--out", out, "--samples-per-shard", "4"]
    assert cli.main([*args, "--direct_running_mode=in_memory"]) == 0
    capsys.readouterr()
    stats = DatasetFolder(out).stats()
    assert stats["candidates"] == 16 and stats["accepted"] == len(DatasetFolder(out)) == 8

    model, preprocess, tokenizer = tiny_clip(image_size=64)
    regions = ClipGridRegions(model, preprocess, tokenizer, vocabulary=("circle",), name="tiny")
    counts = featurize_dataset(first, regions, ["--direct_running_mode=in_memory"])
    assert counts["shards"] == 2 and counts["samples"] == 8
    fs = store.filesystem()
    sidecars = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{first}/regions", detail=False))
    assert sidecars == ["00000.tar", "00001.tar", "spec.json"]


def test_evaluation_images_are_found_and_hashed_in_the_bucket(
    store: ObjectStore, tmp_path: Path
) -> None:
    """`dedupe --eval-images gs://...`: the files under a bucket folder, hashed on the workers
    exactly as the same files on local disk."""
    from dedupe.decontaminate import EvalImagesError, eval_image_files, read_eval_image
    from pretrain.synthetic import write_scene_folder

    scenes = write_scene_folder(str(tmp_path / "scenes"), 3, seed=2, image_size=96)
    images = [(s.key, s.image) for s in DatasetFolder(scenes).iter_samples()]
    evals, fs = store.unique_url("eval"), store.filesystem()
    for i, (_, data) in enumerate(images):
        (tmp_path / f"{i}.jpg").write_bytes(data)
        fs.pipe(f"{evals}/part{i % 2}/{i}.jpg", data)
    fs.pipe(f"{evals}/notes.txt", b"not an image")
    found = eval_image_files(evals)
    assert len(found) == 3 and all(f.startswith(f"{store.scheme}://") for f in found)
    remote = sorted((read_eval_image(f).phash, read_eval_image(f).thumbnail) for f in found)
    local = sorted(
        (read_eval_image(str(p)).phash, read_eval_image(str(p)).thumbnail)
        for p in sorted(tmp_path.glob("*.jpg"))
    )
    assert remote == local
    with pytest.raises(EvalImagesError, match="does not exist"):
        eval_image_files(store.url("no-such-folder"))


def test_a_crawl_reads_its_warc_from_the_bucket(store: ObjectStore, site: str) -> None:
    """`lait crawl --warc BUCKET/crawl.warc.gz --out BUCKET/ds`: input and output on the store."""
    import io

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    page = b"".join(
        b'<img src="%s%d.jpg" alt="a red square from the archive, %d">' % (site.encode(), i, i)
        for i in (0, 3)
    )
    warc = io.BytesIO()
    writer = WARCWriter(warc, gzip=True)
    headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
    writer.write_record(
        writer.create_warc_record(
            site, "response", payload=io.BytesIO(page), length=len(page), http_headers=headers
        )
    )
    warc_url, out = store.unique_url("crawl.warc.gz"), store.unique_url("from-warc")
    store.filesystem().pipe(warc_url, warc.getvalue())
    args = ["crawl", "--warc", warc_url, "--out", out, "--allow-network", "127.0.0.1/32"]
    args += ["--set", "clip.enabled=false", "--no-progress", "--direct_running_mode=in_memory"]
    assert cli.main(args) == 0
    stats = DatasetFolder(out).stats()
    assert stats["by_source"]["warc"]["candidates"] == 2 and stats["run"]["pages"] == {
        "from_warc": 1
    }
    assert len(DatasetFolder(out)) == stats["accepted"] == 2
