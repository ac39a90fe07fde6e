"""`lait crawl --set dedupe.semantic=true`: the scoring stage's CLIP image embeddings feed the
semantic dedupe stage inside the crawl's own graph."""

from __future__ import annotations

from pathlib import Path

from lait.cli import main
from lait.dataset import DatasetFolder, check_stats
from lait.demo_web import DemoWebServer, build_site


def test_crawl_with_semantic_dedupe_on_the_demo_web(tmp_path: Path) -> None:
    site = build_site(seed=13, n_images=60, slow_delay_s=0.3)
    out = tmp_path / "web"
    with DemoWebServer(site) as server:
        code = main(
            [
                "crawl",
                "--pages",
                server.index_url,
                "--depth",
                "1",
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
                "dedupe.semantic=true",
                # Low enough that the demo's near-identical scenes meet it: the stage must act.
                "--set",
                "dedupe.semantic_threshold=0.9",
                "--direct_running_mode=in_memory",
            ]
        )
    assert code == 0
    folder = DatasetFolder(out)
    stats = folder.stats()
    check_stats(stats)
    rows = folder.rejects(["reject_reason", "reject_value", "reject_limit", "duplicate_of"])
    semantic = [r for r in rows.to_pylist() if r["reject_reason"] == "duplicate_semantic"]
    assert semantic, stats["reasons"]
    assert all(r["reject_value"] >= r["reject_limit"] == 0.9 for r in semantic)
    kept = set(folder.metadata(["key"]).column(0).to_pylist())
    assert all(r["duplicate_of"] for r in semantic)
    assert kept  # the stage drops duplicates, not everything
