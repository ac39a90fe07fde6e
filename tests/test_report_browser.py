"""The report in a real headless Chromium: plots render, funnel numbers match stats.json,
injected captions stay text, and the page renders at laptop and phone sizes."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat
from test_report import SCRIPT_CAPTION, write_audit_dataset

from lait.report import write_report

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "Debian's chromium is not installed (run `make chromium`, or "
        "`apt-get install -y chromium`)",
        allow_module_level=True,
    )


def chromium(page: Path, profile: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on `page` with no network, no sync, no first-run chatter."""
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *flags,
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("browser")
    stats = write_audit_dataset(root / "ds")
    paths = write_report(str(root / "ds"), gallery_size=12)
    page = Path(paths.html)
    dom = chromium(page, root / "profile-dom", "--dump-dom", "--virtual-time-budget=3000").stdout
    shots = {}
    for name, size in (("laptop", "1280,2000"), ("phone", "390,844")):
        shot = root / f"{name}.png"
        chromium(page, root / f"profile-{name}", f"--screenshot={shot}", f"--window-size={size}")
        shots[name] = shot
    return {"stats": stats, "dom": dom, "shots": shots, "page": page}


def test_plots_are_present(rendered: dict[str, Any]) -> None:
    dom = rendered["dom"]
    assert len(re.findall(r'<img[^>]+class="plot"', dom)) >= 7
    assert len(re.findall(r'<img[^>]+src="data:image/jpeg', dom)) >= 12


def test_funnel_numbers_in_the_dom_equal_stats_json(rendered: dict[str, Any]) -> None:
    dom, stats = rendered["dom"], rendered["stats"]
    cells = {
        (stage, field): int(value.replace(",", ""))
        for stage, field, value in re.findall(
            r'data-stage="([^"]+)" data-field="([^"]+)">([\d,]+)<', dom
        )
    }
    expected = {
        (step["stage"], field): step[field]
        for step in stats["funnel"]
        for field in ("in", "rejected", "out")
    }
    assert cells == expected
    totals = dict(re.findall(r'data-figure="(\w+)" data-value="\d+">([\d,]+)<', dom))
    for figure in ("candidates", "accepted", "rejected"):
        assert int(totals[figure].replace(",", "")) == stats[figure]


def test_content_filter_section_renders_its_galleries(rendered: dict[str, Any]) -> None:
    dom = rendered["dom"]
    assert re.search(r'<section[^>]+id="content"', dom), "no content-filter section"
    blocks = dict(re.findall(r'data-head="(\w+)">(.*?)(?=<div class="head"|</section>)', dom, re.S))
    assert set(blocks) == {"nonnatural", "watermark"}
    for signal, block in blocks.items():
        # Highest-scored accepted: thumbnails from the shards, each with its probability.
        assert len(re.findall(r'<img[^>]+src="data:image/jpeg', block)) >= 5, signal
        assert f"p_{signal} " in block
        # Lowest-scored rejected: the ledger's rows, as text.
        assert "Lowest-scored rejected" in block and "<table" in block


def test_duplicates_section_shows_each_pair_against_its_limit(rendered: dict[str, Any]) -> None:
    dom = rendered["dom"]
    section = re.search(r'<section[^>]+id="duplicates".*?</section>', dom, re.S)
    assert section, "no duplicates section"
    pairs = re.findall(
        r'<span class="pair" data-reject-value="([^"]+)" data-reject-limit="([^"]+)">([^<]+)<',
        section.group(0),
    )
    # the perceptual drop's Hamming bits against the threshold, the caption drop's Jaccard
    # against its bound; an exact drop measures nothing and shows a dash
    assert sorted(pairs) == [
        ("0.9231", "0.9", "Jaccard 0.923 ≥ 0.9"),
        ("7", "10", "Hamming 7 bits ≤ 10"),
    ]
    assert '<span class="pair">—</span>' in section.group(0)
    assert "pair: measured vs limit" in section.group(0)


def test_injected_captions_do_not_execute(rendered: dict[str, Any]) -> None:
    dom = rendered["dom"]
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title is not None and title.group(1) == "LAIT report · ds"
    assert "PWNED" not in title.group(1)
    # No element the payloads would create: no script element, no <img src="x">, no marker.
    assert "<script" not in dom.lower()
    assert not re.search(r'<img[^>]*src="x"', dom)
    assert "data-pwned" not in dom.split("<body", 1)[1].split(">", 1)[0]
    # ...and the payload is on the page, as text.
    assert html.escape(SCRIPT_CAPTION, quote=False) in dom


@pytest.mark.parametrize("name", ["laptop", "phone"])
def test_screenshots_render(rendered: dict[str, Any], name: str) -> None:
    shot = rendered["shots"][name]
    assert shot.is_file() and shot.stat().st_size > 10_000
    with Image.open(shot) as image:
        expected = (1280, 2000) if name == "laptop" else (390, 844)
        assert image.size == expected
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 50  # not one colour: text, plots, photos
        assert max(ImageStat.Stat(image.convert("L")).stddev) > 20


PHONE_WIDTH = 390
# Headless Chromium will not make a window narrower than 500 px for --dump-dom, so the probe
# narrows the page itself to a phone's width, then reports how wide the body's content is.
PROBE = f"""<script>addEventListener('load', () => {{
  document.documentElement.style.width = '{PHONE_WIDTH}px';
  document.body.setAttribute('data-probe-width', document.body.scrollWidth);
}})</script>"""


def test_phone_layout_does_not_scroll_sideways(rendered: dict[str, Any], tmp_path: Path) -> None:
    # The page forbids scripts, so measure a copy with the CSP removed and the probe added:
    # at phone width nothing may stick out sideways (wide tables scroll inside their box).
    page = rendered["page"].read_text(encoding="utf-8")
    csp = re.search(r'<meta http-equiv="Content-Security-Policy"[^>]*>', page)
    assert csp is not None
    copy = tmp_path / "probe.html"
    copy.write_text(page.replace(csp.group(0), "").replace("</body>", PROBE + "</body>"))
    flags = [f"--window-size={PHONE_WIDTH},844", "--dump-dom", "--virtual-time-budget=3000"]
    dom = chromium(copy, tmp_path / "profile", *flags).stdout
    width = re.search(r'<body data-probe-width="(\d+)"', dom)
    assert width is not None, "the layout probe did not run"
    assert int(width.group(1)) <= PHONE_WIDTH


def test_report_of_a_demo_run_renders_with_its_real_funnel(tmp_path: Path) -> None:
    from lait.demo_web import DemoWebServer, build_site
    from pipeline.clip import DEMO_CLIP_MODEL, ClipConfig
    from pipeline.config import OutputConfig, PipelineConfig, SourcesConfig
    from pipeline.fetch import FetchConfig
    from pipeline.run import run_pipeline

    with DemoWebServer(build_site(seed=5, n_images=80, slow_delay_s=1.0)) as server:
        config = PipelineConfig(
            sources=SourcesConfig(pages=(server.index_url,), depth=1),
            fetch=FetchConfig(allowed_networks=("127.0.0.1/32",), total_timeout_s=0.5, retries=0),
            clip=ClipConfig(model=DEMO_CLIP_MODEL),
            output=OutputConfig(folder=str(tmp_path / "web")),
        )
        stats = run_pipeline(config, ["--direct_running_mode=in_memory"], show_progress=False)
    page = Path(write_report(str(tmp_path / "web"), gallery_size=8).html)
    dom = chromium(page, tmp_path / "profile", "--dump-dom", "--virtual-time-budget=3000").stdout
    cells = {
        (stage, field): int(value.replace(",", ""))
        for stage, field, value in re.findall(
            r'data-stage="([^"]+)" data-field="([^"]+)">([\d,]+)<', dom
        )
    }
    assert cells, "the funnel table is missing from the rendered page"
    for step in stats["funnel"]:
        assert cells[(step["stage"], "rejected")] == step["rejected"], step["stage"]
        assert cells[(step["stage"], "in")] == step["in"], step["stage"]
    assert len(re.findall(r'<img[^>]+class="plot"', dom)) >= 5
    shot = tmp_path / "shot.png"
    chromium(page, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,1600")
    assert ImageStat.Stat(Image.open(shot).convert("L")).stddev[0] > 10
