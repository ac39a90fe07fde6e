"""`lait dedupe --semantic` on a demo-web dataset folder: the demo CLIP embeds the shards'
images on the workers, and semantic drops land in the ledger with their cosine."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_dedupe_demo import _write, demo_records

from dedupe import DedupeConfig
from lait import cli
from lait.dataset import DatasetFolder, check_stats


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo") / "ds"
    demo = demo_records(seed=1, n_images=120)
    _write(folder, demo.records)
    return folder


def _ledger(folder: Path) -> list[dict]:
    rows: list[dict] = []
    for part in sorted((folder / "rejects").glob("*.parquet")):
        rows += pq.read_table(part).to_pylist()
    return rows


def test_semantic_dedupe_on_the_demo_web(demo_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    threshold = 0.97
    args = ["dedupe", str(demo_folder), "--out", str(out), "--semantic"]
    args += ["--clip-model", "lait-demo-clip", "--semantic-threshold", str(threshold)]
    assert cli.main([*args, "--direct_running_mode=in_memory"]) == 0
    stats = DatasetFolder(out).stats()
    check_stats(stats)
    assert stats["candidates"] == DatasetFolder(demo_folder).stats()["candidates"]
    assert stats["run"]["dedupe"]["semantic"] is True
    assert stats["run"]["embeddings"]["model"] == "lait-demo-clip"
    semantic = [r for r in _ledger(out) if r["reject_reason"] == "duplicate_semantic"]
    print(f"semantic drops: {len(semantic)} of {stats['candidates']}")
    assert semantic, "the demo web repeats pictures; some must be semantic duplicates"
    kept = {s.key for s in DatasetFolder(out).iter_samples()}
    for row in semantic:
        assert row["reject_limit"] == pytest.approx(threshold)
        assert threshold <= row["reject_value"] <= 1.0 + 1e-4
        assert row["duplicate_of"]
    # every chain of duplicates ends at a kept sample
    by_key = {r["key"]: r for r in _ledger(out)}
    for row in semantic:
        key = row["duplicate_of"]
        while key in by_key:
            key = by_key[key]["duplicate_of"]
        assert key in kept


def test_semantic_without_a_model_is_refused(demo_folder: Path, tmp_path: Path) -> None:
    args = ["dedupe", str(demo_folder), "--out", str(tmp_path / "o"), "--semantic"]
    assert cli.main(args) == 2
    assert not DedupeConfig().semantic
