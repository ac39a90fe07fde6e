"""The report page: one self-contained HTML file built from a `ReportData`.

Crawled text (captions, URLs, details, domains, anything from stats.json) is hostile input.
The page is built with a tiny element builder: `el(tag, *children, **attributes)` escapes
every plain `str` child and every attribute value; only `Html` values (markup this module
built itself) pass through unescaped. Links are made only for http(s) URLs, images only
from `data:` URIs this package produced, and a Content-Security-Policy forbids scripts and
network loads as a second line of defence.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from lait.record import RejectReason
from lait.report import plots
from lait.report.figures import DuplicateCluster, ReportData
from lait.report.thumbnails import Thumbnails


class Html(str):
    """Markup built by this module: inserted as is. Anything else is escaped."""

    __slots__ = ()


def escape(value: object) -> Html:
    """`value` as text that cannot become markup."""
    return Html(html.escape(str(value), quote=True))


def join(parts: Iterable[Html | str]) -> Html:
    """Several children as one (plain strings escaped)."""
    return Html("".join(p if isinstance(p, Html) else escape(p) for p in parts))


_VOID = {"img", "meta", "br", "hr", "col"}


def el(tag: str, *children: Html | str | None, **attributes: object) -> Html:
    """`<tag attributes>children</tag>`: attribute names end `_` to dodge keywords
    (`class_`), `__` becomes `-` (`data__stage`); None/False attributes are left out."""
    attrs = []
    for name, value in attributes.items():
        if value is None or value is False:
            continue
        name = name.rstrip("_").replace("__", "-")
        attrs.append(f" {name}" if value is True else f' {name}="{escape(value)}"')
    opening = f"<{tag}{''.join(attrs)}>"
    if tag in _VOID:
        return Html(opening)
    return Html(opening + join(c for c in children if c is not None) + f"</{tag}>")


def _safe_href(url: object) -> str | None:
    """`url` if it is an http(s) URL a link may point at, else None (no javascript: links)."""
    text = str(url or "").strip()
    return text if text.lower().startswith(("http://", "https://")) else None


def link(url: object, label: object | None = None) -> Html:
    """A link to a crawled URL that opens nothing but http(s); other URLs stay plain text."""
    text = "" if url is None else str(url)
    href = _safe_href(text)
    shown = text if label is None else str(label)
    if href is None:
        return el("span", shown)
    return el("a", shown, href=href, rel="noopener noreferrer nofollow", target="_blank")


def _int(n: int) -> str:
    return f"{n:,}"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:,.0f}"


def _empty(message: str) -> Html:
    return el("p", message, class_="empty")


def _plot(uri: str | None, alt: str, empty: str) -> Html:
    if uri is None:
        return _empty(empty)
    if not uri.startswith("data:image/"):
        raise ValueError("plots must be data: URIs")
    return el("img", src=uri, alt=alt, class_="plot")


def _section(anchor: str, title: str, lede: str | Html | None, *body: Html) -> Html:
    return el(
        "section",
        el("h2", title),
        el("p", lede, class_="lede") if lede else None,
        *body,
        id=anchor,
    )


def _table(
    headers: Sequence[tuple[str, str]], rows: Iterable[Sequence[Html | str]], *, stack: bool
) -> Html:
    """A table; `headers` are (label, 'num' or ''); stacked tables become cards on phones."""
    head = el("thead", el("tr", *(el("th", h, class_=c or None) for h, c in headers)))
    body = el(
        "tbody",
        *(
            el(
                "tr",
                *(
                    el("td", cell, class_=c or None, data__label=h)
                    for (h, c), cell in zip(headers, row, strict=True)
                ),
            )
            for row in rows
        ),
    )
    fixed = any(c.startswith("w") or " w" in c for _, c in headers)
    classes = " ".join(c for c, on in (("stack", stack), ("fixed", fixed)) if on) or None
    return el("div", el("table", head, body, class_=classes), class_="scroll")


# --- header, summary and warnings --------------------------------------------------------


def _summary(data: ReportData) -> Html:
    def card(label: str, value: int, figure: str, note: str = "") -> Html:
        return el(
            "div",
            el("div", _int(value), class_="v", data__figure=figure, data__value=str(value)),
            el("div", label, el("span", f" {note}", class_="note") if note else None, class_="l"),
            class_="stat",
        )

    sources = len(data.by_source)
    return el(
        "div",
        card("candidates", data.candidates, "candidates"),
        card("accepted", data.accepted, "accepted", _pct(data.accepted, data.candidates)),
        card("rejected", data.rejected, "rejected", _pct(data.rejected, data.candidates)),
        card("shards", data.shards, "shards"),
        card("sources", sources, "sources"),
        class_="cards",
    )


def _warnings(data: ReportData) -> Html | None:
    if not data.warnings:
        return None
    return el(
        "div",
        el("strong", "Check these before trusting the figures:"),
        el("ul", *(el("li", w) for w in data.warnings)),
        class_="warn",
        role="alert",
    )


# --- funnel --------------------------------------------------------------------------------


def _funnel(data: ReportData) -> Html:
    if not data.funnel or data.candidates == 0:
        return _section(
            "funnel",
            "Funnel",
            None,
            _empty("This folder holds no records: no shards and no rejects ledger."),
        )
    rows = []
    for step in data.funnel:
        stage = str(step["stage"])
        reasons = join(
            el(
                "span",
                el("code", reason),
                " ",
                el("b", _int(n), data__reason=reason, data__value=str(n)),
                class_="reason",
            )
            for reason, n in sorted(step["reasons"].items(), key=lambda kv: (-kv[1], kv[0]))
        )

        def cell(field: str, value: int, stage: str = stage) -> Html:
            return el("span", _int(value), data__stage=stage, data__field=field)

        rows.append(
            [
                el("code", stage),
                cell("in", step["in"]),
                cell("rejected", step["rejected"]),
                cell("out", step["out"]),
                reasons or el("span", "—", class_="muted"),
            ]
        )
    adds_up = data.accepted + data.rejected == data.candidates and (
        data.funnel[-1]["out"] == data.accepted
    )
    check = el(
        "p",
        f"{_int(data.accepted)} accepted + {_int(data.rejected)} rejected = "
        f"{_int(data.candidates)} candidates",
        " ✓" if adds_up else " ✗ does not add up",
        f" · stats.json {data.stats_json}",
        class_="check " + ("good" if adds_up and data.stats_json == "matches" else "bad"),
    )
    table = _table(
        [("stage", ""), ("in", "num"), ("rejected", "num"), ("out", "num"), ("reasons", "")],
        rows,
        stack=False,
    )
    return _section(
        "funnel",
        "Funnel",
        "Every candidate ends in exactly one place: a shard (accepted) or the rejects "
        "ledger, at the stage that dropped it. Counts are exact, read from the parquet files.",
        _plot(plots.funnel_plot(data.funnel, data.accepted), "funnel chart", ""),
        check,
        el("h3", "Per stage"),
        table,
        el("h3", "Reject reasons"),
        _plot(plots.reasons_plot(data.reasons), "reject reasons chart", "Nothing was rejected."),
    )


# --- distributions --------------------------------------------------------------------------


def _stats_line(hist: Any, fmt: Any = _num) -> Html:
    s = hist.summary()
    parts = [
        f"n = {_int(s['n'])}",
        f"median {fmt(s['median'])}",
        f"5–95% {fmt(s['p5'])} – {fmt(s['p95'])}",
        f"range {fmt(s['min'])} – {fmt(s['max'])}",
    ]
    if s["missing"]:
        parts.append(f"{_int(s['missing'])} missing")
    if hist.below or hist.above:
        parts.append(f"{_int(hist.below + hist.above)} outside the plotted bins")
    return el("span", " · ".join(parts))


def _distribution_panel(
    title: str,
    body: Html,
    lines: Sequence[tuple[str, Any, Any]] = (),
    note: str | None = None,
) -> Html:
    summaries = [
        el("div", el("b", f"{label}: "), _stats_line(hist, fmt), class_="summary")
        for label, hist, fmt in lines
        if hist.count
    ]
    return el(
        "div",
        el("h3", title),
        el("p", note, class_="meta") if note else None,
        body,
        *summaries,
        class_="panel",
    )


def _distributions(data: ReportData) -> Html:
    d = data.distributions
    acc = {name: series["accepted"] for name, series in d.items()}
    rej = {name: series["rejected"] for name, series in d.items()}
    threshold = data.clip_threshold
    clip_note = f"threshold {threshold:g}" if threshold is not None else "no threshold recorded"
    clip_run = data.run.get("clip")
    model = clip_run.get("model") if isinstance(clip_run, dict) else None
    if isinstance(model, str) and model:
        clip_note = f"{model}, {clip_note}"
    clip = _distribution_panel(
        f"CLIP score ({clip_note})",
        _plot(
            plots.histogram_plot(
                {"accepted": acc["clip_score"], "rejected": rej["clip_score"]},
                xlabel="CLIP image–text similarity",
                marker=threshold,
                marker_label=f"threshold {threshold:g}" if threshold is not None else "",
            ),
            "CLIP score histogram",
            "No CLIP scores yet: the CLIP scoring stage has not run on this dataset.",
        ),
        [("accepted", acc["clip_score"], _num), ("rejected", rej["clip_score"], _num)],
        note="stats.json run.clip_threshold is not set, so no threshold is marked."
        if threshold is None and acc["clip_score"].count
        else None,
    )

    def whole(v: float | None) -> str:
        return _num(v, 0)

    def size(v: float | None) -> str:
        return plots.human_bytes(v) if v is not None else "–"

    caption = _distribution_panel(
        "Caption length (characters)",
        _plot(
            plots.histogram_plot(
                {"accepted": acc["caption_length"], "rejected": rej["caption_length"]},
                xlabel="characters (last bin: 400+ not shown)",
            ),
            "caption length histogram",
            "No captions in this dataset.",
        ),
        [
            ("accepted", acc["caption_length"], whole),
            ("rejected", rej["caption_length"], whole),
        ],
    )
    languages = data.languages.top(15)
    language = _distribution_panel(
        "Language (accepted)",
        _plot(
            plots.category_plot(languages, xlabel="accepted samples")
            if any(name != "(not identified)" for name, _ in languages)
            else None,
            "language bar chart",
            "No languages identified yet: the language-ID stage has not run on these samples.",
        ),
        [("language score", acc["language_score"], _num)],
    )
    dims = _distribution_panel(
        "Image width and height (accepted, pixels)",
        _plot(
            plots.histogram_plot({"width": acc["width"], "height": acc["height"]}, xlabel="pixels"),
            "image size histogram",
            "No image sizes recorded.",
        ),
        [("width", acc["width"], whole), ("height", acc["height"], whole)],
    )
    aspect = _distribution_panel(
        "Aspect ratio (width / height, accepted)",
        _plot(
            plots.histogram_plot(
                {"accepted": acc["aspect_ratio"]}, xlabel="width / height", log_x=True
            ),
            "aspect ratio histogram",
            "No image sizes recorded.",
        ),
        [("accepted", acc["aspect_ratio"], lambda v: _num(v, 2))],
    )
    nbytes = _distribution_panel(
        "Image bytes (as stored)",
        _plot(
            plots.histogram_plot(
                {"accepted": acc["num_bytes"], "rejected": rej["num_bytes"]},
                xlabel="bytes",
                log_x=True,
                bytes_axis=True,
            ),
            "image bytes histogram",
            "No image byte counts recorded.",
        ),
        [("accepted", acc["num_bytes"], size), ("rejected", rej["num_bytes"], size)],
    )
    return _section(
        "distributions",
        "Distributions",
        "Fixed-bin histograms over every record (green: accepted, red: rejected where the "
        "stage recorded the value). Medians and percentiles are read from the bins.",
        el("div", clip, caption, language, dims, aspect, nbytes, class_="grid2"),
    )


def _domains(data: ReportData) -> Html:
    top = data.top_domains()
    if not top:
        return _section("domains", "Domains", None, _empty("No image URLs in this dataset."))
    widest = max(row["candidates"] for row in top) or 1
    rows = [
        [
            el("span", row["domain"], class_="domain"),
            _int(row["candidates"]),
            _int(row["accepted"]),
            _int(row["rejected"]),
            _pct(row["accepted"], row["candidates"]),
            el(
                "div",
                el(
                    "div",
                    class_="bar-ok",
                    style=f"width:{100 * row['accepted'] / widest:.1f}%",
                ),
                el(
                    "div",
                    class_="bar-bad",
                    style=f"width:{100 * row['rejected'] / widest:.1f}%",
                ),
                class_="bar",
            ),
        ]
        for row in top
    ]
    note = (
        "Counts are exact."
        if data.domains_exact
        else "More distinct domains than the report tracks: the rarest were dropped, so "
        "these counts are lower bounds."
    )
    sources = data.caption_sources.top(10)
    return _section(
        "domains",
        "Domains and sources",
        f"The {len(top)} image hosts with the most candidates. {note}",
        _table(
            [
                ("domain", ""),
                ("candidates", "num"),
                ("accepted", "num"),
                ("rejected", "num"),
                ("kept", "num"),
                ("", "barcell"),
            ],
            rows,
            stack=False,
        ),
        el("h3", "Sources"),
        _table(
            [("source", ""), ("candidates", "num"), ("accepted", "num"), ("rejected", "num")],
            [
                [el("code", name), _int(c["candidates"]), _int(c["accepted"]), _int(c["rejected"])]
                for name, c in data.by_source.items()
            ],
            stack=False,
        ),
        el("h3", "Where accepted captions came from"),
        el(
            "p",
            " · ".join(f"{name}: {_int(n)}" for name, n in sources) or "no accepted samples",
            class_="meta",
        ),
    )


# --- galleries ------------------------------------------------------------------------------


def _sample_meta(row: dict[str, Any]) -> Html:
    parts: list[Html | str] = []
    if row.get("clip_score") is not None:
        parts.append(el("span", f"CLIP {_num(row['clip_score'])}", class_="pill"))
    if row.get("language"):
        score = row.get("language_score")
        parts.append(
            el(
                "span",
                f"{row['language']}" + (f" {_num(score, 2)}" if score else ""),
                class_="pill",
            )
        )
    for signal in ("nonnatural", "unsafe", "watermark"):
        if row.get(f"p_{signal}") is not None:
            parts.append(el("span", f"p_{signal} {_num(row[f'p_{signal}'])}", class_="pill"))
    if row.get("face_boxes") not in (None, "[]", []):  # "[]": folders from before list<list>
        parts.append(el("span", "faces blurred", class_="pill"))
    if row.get("width") and row.get("height"):
        parts.append(el("span", f"{row['width']}×{row['height']}", class_="pill"))
    if row.get("num_bytes"):
        parts.append(el("span", plots.human_bytes(row["num_bytes"]), class_="pill"))
    if row.get("caption_source"):
        parts.append(el("span", row["caption_source"], class_="pill"))
    return el("div", *parts, class_="pills")


def _image(row: dict[str, Any], thumbnails: Thumbnails) -> Html:
    key = str(row.get("key"))
    uri = thumbnails.uris.get(key)
    if uri is not None and uri.startswith("data:image/"):
        return el("img", src=uri, alt=f"image of sample {key}")
    reason = thumbnails.failures.get(key, "no image")
    return el("div", el("span", reason), class_="noimg")


def _sample_card(row: dict[str, Any], thumbnails: Thumbnails, extra: Html | None = None) -> Html:
    return el(
        "figure",
        _image(row, thumbnails),
        el(
            "figcaption",
            extra,
            el("p", row.get("caption") or "", class_="caption", title=row.get("caption") or ""),
            _sample_meta(row),
            el("p", link(row.get("url")), class_="url"),
            el("code", row.get("key") or "", class_="key"),
        ),
        class_="card",
    )


def _gallery(rows: Sequence[dict[str, Any]], thumbnails: Thumbnails) -> Html:
    return el("div", *(_sample_card(row, thumbnails) for row in rows), class_="gallery")


def _random_gallery(data: ReportData, thumbnails: Thumbnails) -> Html:
    body = (
        _gallery(data.random_accepted, thumbnails)
        if data.random_accepted
        else _empty("No accepted samples to show.")
    )
    return _section(
        "random",
        "Random accepted samples",
        f"A uniform random sample of {len(data.random_accepted)} accepted samples "
        f"(reservoir sampling, seed {data.parameters['seed']}; the same seed gives the same "
        "sample).",
        body,
    )


def _threshold_gallery(data: ReportData, thumbnails: Thumbnails) -> Html:
    if data.lowest_clip:
        title, lede = (
            "Lowest CLIP scores among accepted samples",
            "No CLIP threshold is recorded in stats.json (run.clip_threshold), so these are the "
            "accepted samples with the lowest scores: the ones a threshold would drop first.",
        )
    else:
        title, lede = (
            "Accepted samples nearest the CLIP threshold",
            f"The accepted samples whose CLIP score is closest to the threshold "
            f"{data.clip_threshold:g}: if these look wrong, the threshold is too low.",
        )
    body = (
        _gallery(data.near_threshold, thumbnails)
        if data.near_threshold
        else _empty("No accepted sample has a CLIP score yet: the CLIP stage has not run.")
    )
    return _section("threshold", title, lede, body)


def _reject_rows(rows: Sequence[dict[str, Any]], thumbnails: Thumbnails) -> Html:
    show_images = any(str(r.get("key")) in thumbnails.uris for r in rows)
    headers = [("caption", "w40"), ("url", "w35"), ("detail", "w15"), ("source", "w10")]
    if show_images:
        headers = [("image", "w10"), ("caption", "w35"), ("url", "w30"), *headers[2:]]
    table_rows = []
    for row in rows:
        cells: list[Html | str] = [
            el("span", row.get("caption") or "", class_="caption-text"),
            el("span", link(row.get("url")), class_="url"),
            el("span", row.get("reject_detail") or "—"),
            el("code", row.get("source") or ""),
        ]
        if row.get("duplicate_of"):
            cells[2] = join([cells[2], el("br"), "duplicate of ", el("code", row["duplicate_of"])])
        if show_images:
            uri = thumbnails.uris.get(str(row.get("key")))
            cells.insert(0, el("img", src=uri, alt="", class_="thumb") if uri else "—")
        table_rows.append(cells)
    return _table(headers, table_rows, stack=True)


def _rejected_gallery(data: ReportData, thumbnails: Thumbnails) -> Html:
    if not data.rejected_by_reason:
        return _section("rejected", "Rejected samples", None, _empty("Nothing was rejected."))
    blocks = []
    for reason, rows in data.rejected_by_reason.items():
        count = data.reasons.get(reason, 0)
        try:
            stage = RejectReason(reason).stage.value
        except ValueError:
            stage = "unknown stage"
        blocks.append(
            el(
                "details",
                el(
                    "summary",
                    el("code", reason),
                    el("span", f" {stage} · ", class_="muted"),
                    el("b", _int(count)),
                    el("span", f" ({_pct(count, data.candidates)} of candidates)", class_="muted"),
                ),
                _reject_rows(rows, thumbnails),
                open=True,
            )
        )
    return _section(
        "rejected",
        "Rejected samples, per reason",
        "A random sample of each reason's rejects (the ledger keeps metadata, not pixels). "
        "Crawled text is shown as text.",
        *blocks,
    )


_HEAD_TITLES = {
    "nonnatural": "Non-natural images (charts, screenshots, slides, logos, text banners)",
    "unsafe": "Unsafe images",
    "watermark": "Watermarked images",
}


def _content_heads(data: ReportData, thumbnails: Thumbnails) -> Html:
    lede = (
        "Heads on the CLIP image embedding score each downloaded image; above a head's "
        "threshold it is rejected with the head's reason. Per head: the accepted samples it "
        "scored highest (if these look like what it should catch, its threshold is too high) "
        "and the rejects it scored lowest (if these look fine, too low; the ledger keeps no "
        "pixels, so they are listed as text)."
    )
    if not data.content_heads:
        return _section(
            "content",
            "Content filters",
            lede,
            _empty("No content head ran on this dataset (clip.nonnatural/unsafe/watermark)."),
        )
    blocks: list[Html] = []
    for signal, head in data.content_heads.items():
        threshold = head.get("threshold")
        summary = el(
            "p",
            el("code", head.get("head") or "(head not recorded)"),
            f" · threshold {_num(threshold) if threshold is not None else '—'} · "
            f"{_int(head['scored'])} scored · ",
            el("b", _int(head["rejected"])),
            f" rejected as {head['reason']}",
            class_="muted",
        )
        accepted = head["highest_accepted"]
        rejected = [
            {**row, "reject_detail": row.get("reject_detail") or f"{head['column']}"}
            for row in head["lowest_rejected"]
        ]
        blocks.append(
            el(
                "div",
                el("h3", _HEAD_TITLES.get(signal, signal)),
                summary,
                el("h4", "Highest-scored accepted"),
                _gallery(accepted, thumbnails) if accepted else _empty("None accepted."),
                el("h4", "Lowest-scored rejected"),
                _reject_rows(rejected, thumbnails) if rejected else _empty("None rejected."),
                class_="head",
                data__head=signal,
            )
        )
    return _section("content", "Content filters", lede, *blocks)


# How each similarity drop measures its pair: (what the value is, how it meets the limit).
_PAIR_MEASURES = {
    "duplicate_perceptual": ("Hamming {value:.0f} bits", "≤ {limit:.0f}"),
    "duplicate_semantic": ("cosine {value:.4f}", "≥ {limit:g}"),
    "duplicate_caption": ("Jaccard {value:.3f}", "≥ {limit:g}"),
}


def _pair_closeness(row: dict[str, Any]) -> Html:
    """A duplicate drop's pair, as its stage measured it: e.g. "Hamming 7 bits ≤ 10" or
    "cosine 0.9731 ≥ 0.95" (reject_value against reject_limit); "—" for exact matches."""
    value, limit = row.get("reject_value"), row.get("reject_limit")
    if not isinstance(value, int | float):
        return el("span", "—", class_="pair")
    measured, bound = _PAIR_MEASURES.get(
        str(row.get("reject_reason")), ("{value:g}", "vs {limit:g}")
    )
    text = measured.format(value=value)
    if isinstance(limit, int | float):
        text += " " + bound.format(limit=limit)
    return el(
        "span",
        text,
        class_="pair",
        data__reject__value=f"{value:g}",
        data__reject__limit=None if limit is None else f"{limit:g}",
    )


def _cluster(cluster: DuplicateCluster, thumbnails: Thumbnails) -> Html:
    if cluster.survivor is not None:
        tag = el("span", f"survivor ({cluster.survivor_status})", class_="tag")
        survivor = _sample_card(cluster.survivor, thumbnails, extra=tag)
    else:
        survivor = el(
            "div",
            el("p", "The survivor ", el("code", cluster.survivor_key), " is in no parquet file."),
            class_="card noimg",
        )
    shown = len(cluster.duplicates)
    return el(
        "div",
        survivor,
        el(
            "div",
            el(
                "p",
                el("b", _int(cluster.total_duplicates)),
                " record(s) rejected as duplicates of this one"
                + (f" (showing {shown})" if shown < cluster.total_duplicates else ""),
                class_="meta",
            ),
            _table(
                [
                    ("reason", "w15"),
                    ("caption", "w30"),
                    ("url", "w25"),
                    ("pair: measured vs limit", "w15"),
                    ("detail", "w15"),
                ],
                [
                    [
                        el("code", row.get("reject_reason") or ""),
                        el("span", row.get("caption") or "", class_="caption-text"),
                        el("span", link(row.get("url")), class_="url"),
                        _pair_closeness(row),
                        row.get("reject_detail") or "—",
                    ]
                    for row in cluster.duplicates
                ],
                stack=True,
            ),
            class_="dups",
        ),
        class_="cluster",
    )


def _duplicates(data: ReportData, thumbnails: Thumbnails) -> Html:
    body = (
        join(_cluster(c, thumbnails) for c in data.duplicate_clusters)
        if data.duplicate_clusters
        else _empty("No duplicates recorded: no reject names a survivor in duplicate_of.")
    )
    return _section(
        "duplicates",
        "Duplicate clusters",
        "A random sample of duplicate rejects, grouped by the sample they duplicate: the "
        "survivor's image beside the metadata of the records dropped in its favour.",
        body,
    )


# --- opt-out, safety, provenance -------------------------------------------------------------

_MEANINGS = {
    "x_robots_tag_opt_out": "the image response carried X-Robots-Tag noai / noimageai",
    "meta_robots_opt_out": "the page's <meta name=robots> (or name=lait) said noai / "
    "noimageai / noimageindex",
    "robots_txt_disallowed": "robots.txt disallows fetching the image URL",
    "over_host_budget": "the host's job-wide fetch or time budget was spent; never requested",
    "blocked_address": "the host resolved to a private, loopback, link-local or metadata "
    "address; never connected",
    "unsupported_scheme": "not an http(s) URL",
    "too_many_bytes": "the response passed the byte cap",
    "too_many_redirects": "more redirects than allowed",
    "redirect_loop": "redirects went round in a loop",
    "timeout": "the fetch passed its time limit",
    "decompression_bomb": "the image would decode to too many pixels",
}


def _safety(data: ReportData) -> Html:
    fetched = next((s["in"] for s in data.funnel if s["stage"] == "fetch"), 0)

    def table(counts: dict[str, int]) -> Html:
        return _table(
            [
                ("reason", "w25"),
                ("records", "num w10"),
                ("of fetch attempts", "num w15"),
                ("meaning", ""),
            ],
            [
                [
                    el("code", reason),
                    el("span", _int(n), data__reason=reason, data__value=str(n)),
                    _pct(n, fetched),
                    _MEANINGS.get(reason, ""),
                ]
                for reason, n in counts.items()
            ],
            stack=True,
        )

    settings = _matching_settings(data.run, ("robots", "opt_out", "allow", "block"))
    return _section(
        "safety",
        "Opt-out and safety",
        f"{_int(fetched)} candidates reached the fetch stage. Opt-outs are honoured; unsafe "
        "addresses are never connected to.",
        el("h3", "Opt-out"),
        table(data.opt_out),
        el("h3", "Safety"),
        table(data.safety),
        el("h3", "Run settings"),
        _value_table(settings)
        if settings
        else _empty("stats.json records no robots/opt-out/address settings for this run."),
    )


def _matching_settings(run: dict[str, Any], words: Sequence[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{path}.{key}" if path else str(key))
        elif any(w in path.lower() for w in words):
            found[path] = value

    walk(run, "")
    return found


def _value(value: Any) -> Html:
    """A run setting: scalars and flat lists inline, anything nested as indented JSON."""
    scalar = (str, int, float, bool, type(None))
    if isinstance(value, list) and all(isinstance(v, scalar) for v in value):
        return el("span", ", ".join(str(v) for v in value) or "(none)")
    if isinstance(value, dict) and value and all(isinstance(v, scalar) for v in value.values()):
        return join(el("div", el("code", str(k)), f" {v}") for k, v in value.items())
    if isinstance(value, dict | list):
        return el("pre", json.dumps(value, indent=1, ensure_ascii=False, default=str))
    return el("span", "—" if value is None else str(value))


def _value_table(values: dict[str, Any]) -> Html:
    return _table(
        [("setting", "w30"), ("value", "")],
        [[el("code", key), _value(value)] for key, value in values.items()],
        stack=True,
    )


def _provenance(data: ReportData) -> Html:
    run = (
        _value_table(data.run)
        if data.run
        else _empty("stats.json records no run information (config, versions, run time).")
    )
    report = {
        "dataset": data.dataset,
        **{f"{k} version": v for k, v in data.generated_by.items()},
        **data.parameters,
    }
    return _section(
        "provenance",
        "Provenance",
        "What produced this dataset, as stats.json records it (run), and what produced this "
        "report.",
        el("h3", "Run"),
        run,
        el("h3", "This report"),
        _value_table(report),
    )


# --- the page -------------------------------------------------------------------------------

_NAV = [
    ("funnel", "Funnel"),
    ("distributions", "Distributions"),
    ("domains", "Domains"),
    ("random", "Samples"),
    ("threshold", "Near threshold"),
    ("rejected", "Rejected"),
    ("content", "Content"),
    ("duplicates", "Duplicates"),
    ("safety", "Opt-out & safety"),
    ("provenance", "Provenance"),
]

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'"


def render_page(data: ReportData, thumbnails: Thumbnails) -> str:
    """The whole report page."""
    name = data.dataset.rstrip("/").rsplit("/", 1)[-1] or data.dataset
    head = el(
        "head",
        el("meta", charset="utf-8"),
        el("meta", name="viewport", content="width=device-width, initial-scale=1"),
        el("meta", http__equiv="Content-Security-Policy", content=_CSP),
        el("meta", name="referrer", content="no-referrer"),
        el("title", f"LAIT report · {name}"),
        el("style", Html(CSS)),
    )
    header = el(
        "header",
        el(
            "div",
            el("h1", "LAIT dataset report ", el("span", name, class_="name")),
            el("p", data.dataset, class_="path"),
            el("nav", *(el("a", label, href=f"#{anchor}") for anchor, label in _NAV)),
            class_="wrap",
        ),
        class_="top",
    )
    main = el(
        "main",
        _warnings(data),
        _summary(data),
        _funnel(data),
        _distributions(data),
        _domains(data),
        _random_gallery(data, thumbnails),
        _threshold_gallery(data, thumbnails),
        _rejected_gallery(data, thumbnails),
        _content_heads(data, thumbnails),
        _duplicates(data, thumbnails),
        _safety(data),
        _provenance(data),
        class_="wrap",
    )
    footer = el(
        "footer",
        el(
            "div",
            f"lait {data.generated_by.get('lait', '')} · report.json holds the same figures",
            class_="wrap",
        ),
    )
    return (
        "<!doctype html>\n" + el("html", head, el("body", header, main, footer), lang="en") + "\n"
    )


CSS = """
:root{--fg:#1d2430;--muted:#5b6675;--line:#e1e6ec;--bg:#f3f5f8;--card:#fff;--accent:#3b6ea8;
--ok:#2f7d4f;--bad:#c0392b;--warn:#8a5a00}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,
sans-serif;color:var(--fg);background:var(--bg)}
.wrap{max-width:1200px;margin:0 auto;padding:0 20px}
header.top{background:#1f2a37;color:#fff;padding:18px 0 2px}
header h1{margin:0;font-size:21px;font-weight:650}
header h1 .name{color:#9cc3ee;overflow-wrap:anywhere}
header .path{color:#aeb9c6;font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
overflow-wrap:anywhere;margin:4px 0 8px}
nav{display:flex;flex-wrap:wrap;gap:2px 16px;padding:4px 0 10px;font-size:14px}
nav a{color:#d6e4f5;text-decoration:none;padding:2px 0}
nav a:hover{text-decoration:underline}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;
padding:18px 22px;margin:18px 0;min-width:0}
h2{font-size:19px;margin:0 0 2px}
h3{font-size:15px;margin:18px 0 8px}
.panel h3{margin-top:0}
.lede{color:var(--muted);margin:0 0 14px;font-size:14px;max-width:75ch}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;
margin:18px 0}
.stat{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 16px}
.stat .v{font-size:26px;font-weight:650;font-variant-numeric:tabular-nums;line-height:1.2}
.stat .l{color:var(--muted);font-size:13px}
.stat .note{color:var(--fg);font-weight:600}
.plot{display:block;width:100%;max-width:880px;height:auto}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,480px),1fr));gap:16px}
.panel{border:1px solid var(--line);border-radius:8px;padding:12px 14px;min-width:0}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;color:var(--muted);font-size:12px;text-transform:uppercase;
letter-spacing:.04em;white-space:nowrap}
table.fixed{table-layout:fixed}
.w10{width:10%}.w15{width:15%}.w20{width:20%}.w25{width:25%}.w30{width:30%}.w35{width:35%}
.w40{width:40%}
td code{overflow-wrap:normal;word-break:normal}
td.w20 code,td.w25 code,td.w30 code{overflow-wrap:anywhere}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.barcell{width:28%;min-width:90px;vertical-align:middle}
.summary{color:var(--muted);font-size:13px}.summary b{color:var(--fg)}
.bar{display:flex;height:9px;border-radius:5px;overflow:hidden;background:#eef1f4}
.bar-ok{background:var(--ok)}.bar-bad{background:var(--bad)}
.domain{overflow-wrap:anywhere}
.reason{display:inline-block;margin:0 14px 2px 0;white-space:nowrap}
code,.key,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
code{overflow-wrap:anywhere}
pre{margin:0;white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f8fa;padding:8px;
border-radius:6px;max-height:420px;overflow:auto}
.muted{color:var(--muted)}
.meta{color:var(--muted);font-size:13px;margin:6px 0}
.meta b{color:var(--fg)}
.check{font-weight:600;margin:8px 0 0}
.check.good{color:var(--ok)}.check.bad{color:var(--bad)}
.empty{color:var(--muted);background:#f8f9fb;border:1px dashed #cfd6de;padding:12px 14px;
border-radius:8px;margin:8px 0}
.warn{background:#fff7e0;border:1px solid #efcf7a;color:var(--warn);border-radius:10px;
padding:12px 16px;margin:18px 0}
.warn ul{margin:6px 0 0;padding-left:20px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:14px}
.card{margin:0;border:1px solid var(--line);border-radius:8px;overflow:hidden;background:#fff;
display:flex;flex-direction:column;min-width:0}
.card>img{display:block;width:100%;aspect-ratio:1/1;object-fit:contain;background:#eef1f4}
.noimg{display:flex;align-items:center;justify-content:center;aspect-ratio:1/1;
background:#eef1f4;color:var(--muted);font-size:13px;padding:12px;text-align:center}
.card figcaption{padding:8px 10px 10px;font-size:13.5px}
.caption{margin:0 0 6px;overflow-wrap:anywhere;display:-webkit-box;-webkit-line-clamp:5;
-webkit-box-orient:vertical;overflow:hidden}
.caption-text{overflow-wrap:anywhere}
.pills{display:flex;flex-wrap:wrap;gap:4px;margin:0 0 6px}
.pill{background:#eef3f9;color:#2d4a6b;border-radius:10px;padding:0 7px;font-size:12px;
white-space:nowrap}
.tag{display:inline-block;background:#e6f2ea;color:var(--ok);border-radius:10px;padding:0 8px;
font-size:12px;font-weight:600;margin-bottom:6px}
.url{margin:0 0 4px;font-size:12.5px;overflow-wrap:anywhere;word-break:break-word}
a{color:var(--accent)}
.key{color:var(--muted);font-size:11.5px}
img.thumb{width:72px;height:72px;object-fit:cover;border-radius:4px}
details{border-top:1px solid var(--line);padding:6px 0}
details:first-of-type{border-top:0}
summary{cursor:pointer;padding:4px 0;font-size:15px}
.cluster{display:grid;grid-template-columns:minmax(180px,240px) minmax(0,1fr);gap:16px;
padding:14px 0;border-top:1px solid var(--line)}
.cluster:first-of-type{border-top:0}
footer{color:var(--muted);font-size:13px;padding:8px 0 28px}
@media (max-width:640px){
body{font-size:14px}
.wrap{padding:0 10px}
header h1{font-size:18px}
section{padding:14px 12px;margin:12px 0;border-radius:8px}
.cards{grid-template-columns:repeat(2,minmax(0,1fr));gap:8px}
.stat{padding:10px 12px}.stat .v{font-size:21px}
.gallery{grid-template-columns:repeat(2,minmax(0,1fr));gap:8px}
.cluster{grid-template-columns:1fr}
.cluster .card{max-width:260px}
th,td{padding:5px 6px}
table.stack thead{display:none}
table.stack tr{display:block;border-bottom:1px solid var(--line);padding:6px 0}
table.stack td{display:block;border:0;padding:2px 0}
table.stack td::before{content:attr(data-label);display:block;font-size:11px;
color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
td.barcell,th.barcell{display:none}
}
"""
