"""The report's plots: matplotlib figures rendered to SVG `data:` URIs.

Figures are built with the object API (`matplotlib.figure.Figure`, Agg canvas), so nothing
touches pyplot's global state or the user's backend. SVG is written with a fixed hash salt
and no date, so the same data gives the same bytes. Plots are shown through `<img>`, where a
browser never runs scripts, and labels taken from data are escaped for mathtext.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from lait.record import RejectReason, Stage
from lait.report.streaming import Histogram

ACCEPTED = "#2f7d4f"
REJECTED = "#c0392b"
FLOW = "#3b6ea8"
MUTED = "#8a94a3"
THRESHOLD = "#d68910"
STAGE_COLOURS = {
    stage.value: colour
    for stage, colour in zip(
        Stage,
        (
            "#7f8c8d",
            "#8e44ad",
            "#2980b9",
            "#c0392b",
            "#d35400",
            "#16a085",
            "#d68910",
            "#2c3e50",
        ),
        strict=True,
    )
}
_STYLE: dict[Any, Any] = {  # rcParams for every figure
    "svg.hashsalt": "lait-report",
    "svg.fonttype": "path",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#9aa3ad",
    "axes.labelcolor": "#333333",
    "xtick.color": "#555555",
    "ytick.color": "#555555",
    "axes.grid": True,
    "grid.color": "#e6e9ed",
    "grid.linewidth": 0.8,
    "axes.axisbelow": True,
}


def _label(text: str) -> str:
    """Data text as a literal matplotlib label ('$' would otherwise start mathtext)."""
    return text.replace("$", r"\$")


def _svg_uri(figure: Figure) -> str:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    with matplotlib.rc_context(_STYLE):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float = 6.4, height: float = 3.2) -> Figure:
    with matplotlib.rc_context(_STYLE):
        return Figure(figsize=(width, height), layout="constrained")


def human_count(n: float) -> str:
    """12, 3.4k, 1.2M."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}".rstrip("0").rstrip(".") + unit
    return f"{n:g}"


def human_bytes(n: float) -> str:
    """512 B, 3 KiB, 1.5 MiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{n:.0f} B"


def funnel_plot(funnel: Sequence[dict[str, Any]], accepted: int) -> str:
    """Candidates flowing through the stages: what goes on, and what each stage drops."""
    with matplotlib.rc_context(_STYLE):
        figure = _figure(7.2, 0.42 * (len(funnel) + 2) + 0.8)
        axes = figure.add_subplot()
        labels = ["candidates", *(str(step["stage"]) for step in funnel), "accepted"]
        total = int(funnel[0]["in"]) if funnel else accepted
        positions = list(range(len(labels)))[::-1]
        axes.barh(positions[0], total, color=MUTED, height=0.62)
        for y, step in zip(positions[1:-1], funnel, strict=True):
            kept = int(step["out"])
            dropped = int(step["rejected"])
            axes.barh(y, kept, color=FLOW, height=0.62)
            axes.barh(y, dropped, left=kept, color=REJECTED, height=0.62)
            note = f"−{dropped:,}" if dropped else "—"
            axes.text(kept + dropped, y, f"  {note}", va="center", fontsize=9, color="#444")
        axes.barh(positions[-1], accepted, color=ACCEPTED, height=0.62)
        axes.text(total, positions[0], f"  {total:,}", va="center", fontsize=9, color="#444")
        axes.text(accepted, positions[-1], f"  {accepted:,}", va="center", fontsize=9, color="#444")
        axes.set_yticks(positions, [_label(x) for x in labels])
        axes.set_xlim(0, max(total, 1) * 1.18)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: human_count(x)))
        axes.grid(axis="y", visible=False)
        axes.set_xlabel("records (blue: passed on, red: rejected at that stage)")
        return _svg_uri(figure)


def reasons_plot(reasons: dict[str, int], limit: int = 20) -> str | None:
    """Reject reasons as horizontal bars, coloured by the stage that gives them."""
    top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    if not top:
        return None
    with matplotlib.rc_context(_STYLE):
        figure = _figure(7.2, 0.3 * len(top) + 1.0)
        axes = figure.add_subplot()
        positions = list(range(len(top)))[::-1]
        colours = [STAGE_COLOURS.get(_stage_of(reason), MUTED) for reason, _ in top]
        axes.barh(positions, [n for _, n in top], color=colours, height=0.66)
        for y, (_, n) in zip(positions, top, strict=True):
            axes.text(n, y, f"  {n:,}", va="center", fontsize=9, color="#444")
        axes.set_yticks(positions, [_label(reason) for reason, _ in top])
        axes.set_xlim(0, top[0][1] * 1.18)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: human_count(x)))
        axes.grid(axis="y", visible=False)
        axes.set_xlabel("rejected records (colour: stage)")
        return _svg_uri(figure)


def _stage_of(reason: str) -> str:
    try:
        return RejectReason(reason).stage.value
    except ValueError:
        return ""


def histogram_plot(
    series: dict[str, Histogram],
    *,
    xlabel: str,
    log_x: bool = False,
    marker: float | None = None,
    marker_label: str = "",
    bytes_axis: bool = False,
) -> str | None:
    """Step histograms of one or more series on shared fixed bins, zoomed to the data."""
    drawn = {name: hist for name, hist in series.items() if sum(hist.counts)}
    if not drawn:
        return None
    edges = next(iter(drawn.values())).edges
    used = [i for hist in drawn.values() for i, n in enumerate(hist.counts) if n]
    first, last = max(min(used) - 1, 0), min(max(used) + 2, len(edges) - 1)
    colours = {"accepted": ACCEPTED, "rejected": REJECTED, "width": FLOW, "height": THRESHOLD}
    with matplotlib.rc_context(_STYLE):
        figure = _figure()
        axes = figure.add_subplot()
        for name, hist in drawn.items():
            colour = colours.get(name, FLOW)
            window = edges[first : last + 1]
            counts = hist.counts[first:last]
            axes.stairs(counts, window, color=colour, alpha=0.22, fill=True)
            axes.stairs(counts, window, color=colour, linewidth=1.4, label=_label(name))
        if marker is not None:
            axes.axvline(marker, color=THRESHOLD, linestyle="--", linewidth=1.6)
            axes.text(
                marker,
                0.98,
                f" {_label(marker_label)}",
                transform=axes.get_xaxis_transform(),
                va="top",
                color=THRESHOLD,
                fontsize=9,
            )
        if log_x:
            axes.set_xscale("log")
            axes.xaxis.set_minor_formatter(NullFormatter())
            if bytes_axis:
                axes.xaxis.set_major_locator(LogLocator(base=2, numticks=6))
                axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: human_bytes(x)))
            else:  # ratios: 1/4 1/2 1 2 4 ...
                axes.xaxis.set_major_locator(FixedLocator(_RATIOS))
                axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _ratio(x)))
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda y, _: human_count(y)))
        low, high = edges[first], edges[last]
        if marker is not None and math.isfinite(marker):
            low, high = min(low, marker), max(high, marker)
        axes.set_xlim(low, high)
        axes.set_xlabel(xlabel)
        axes.set_ylabel("records")
        if len(drawn) > 1:
            axes.legend(frameon=False, loc="upper right")
        return _svg_uri(figure)


_RATIOS = [1 / 8, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 1, 3 / 2, 2, 3, 4, 8]


def _ratio(x: float) -> str:
    """1/2 for 0.5, 3/2 for 1.5, 2 for 2."""
    for a, b in ((1, 8), (1, 4), (1, 3), (1, 2), (2, 3), (3, 2)):
        if abs(x - a / b) < 1e-9:
            return f"{a}/{b}"
    return f"{x:g}"


def category_plot(counts: Sequence[tuple[str, int]], *, xlabel: str) -> str | None:
    """Horizontal bars of the largest categories (largest on top)."""
    if not counts:
        return None
    with matplotlib.rc_context(_STYLE):
        figure = _figure(6.4, 0.3 * len(counts) + 1.0)
        axes = figure.add_subplot()
        positions = list(range(len(counts)))[::-1]
        axes.barh(positions, [n for _, n in counts], color=FLOW, height=0.66)
        for y, (_, n) in zip(positions, counts, strict=True):
            axes.text(n, y, f"  {n:,}", va="center", fontsize=9, color="#444")
        axes.set_yticks(positions, [_label(name[:32]) for name, _ in counts])
        axes.set_xlim(0, counts[0][1] * 1.2)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: human_count(x)))
        axes.grid(axis="y", visible=False)
        axes.set_xlabel(xlabel)
        return _svg_uri(figure)
