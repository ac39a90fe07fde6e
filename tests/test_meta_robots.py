"""The page policy on its own: which `<meta>` opts a page out, and which images the cap takes."""

from __future__ import annotations

import pytest

from lait.record import RejectReason, Status
from pipeline.extract import extract_page
from pipeline.extract.page_policy import PagePolicy, apply_page_policy, meta_robots_opt_out
from pipeline.fetch import FetchConfig


def _page(meta: str, images: int = 2) -> bytes:
    imgs = "".join(
        f'<img src="/i{n}.jpg" alt="a photo of a boat number {n}">' for n in range(images)
    )
    return f"<html><head>{meta}</head><body>{imgs}</body></html>".encode()


@pytest.mark.parametrize(
    ("meta", "opted_out"),
    [
        ('<meta name="robots" content="noai">', "robots: noai"),
        ('<meta name="ROBOTS" content="index, follow, NoImageAI">', "robots: noimageai"),
        ('<meta name="robots" content="noimageindex">', "robots: noimageindex"),
        ('<meta name="lait" content="noai">', "lait: noai"),
        ('<meta name="otherbot" content="noai">', None),
        ('<meta name="robots" content="noindex, nofollow">', None),
        ('<meta name="robots" content="none">', None),
        ('<meta property="robots" content="noai">', None),  # not a name
        ("", None),
    ],
)
def test_which_meta_opts_a_page_out(meta: str, opted_out: str | None) -> None:
    page = extract_page(_page(meta), "http://site.test/p.html", source="web")
    policy = PagePolicy.of(FetchConfig())
    assert meta_robots_opt_out(page.meta, policy.agent_token, policy.opt_out_directives) == (
        opted_out
    )
    policed = apply_page_policy(page.records, page.meta, policy)
    reasons = {r.reject_reason for r in policed.records}
    if opted_out:
        assert reasons == {RejectReason.META_ROBOTS_OPT_OUT} and policed.opted_out == 2
        assert policed.records[0].reject_stage is not None
    else:
        assert reasons == {None} and policed.opted_out == 0


def test_the_off_switch_and_custom_directives() -> None:
    page = extract_page(
        _page('<meta name="robots" content="noai, noindex">'), "http://s.test/", source="web"
    )
    off = PagePolicy.of(FetchConfig(respect_meta_robots=False))
    assert apply_page_policy(page.records, page.meta, off).opted_out == 0
    strict = PagePolicy.of(FetchConfig(meta_robots_opt_out_directives=("noindex",)))
    assert apply_page_policy(page.records, page.meta, strict).opt_out == "robots: noindex"


def test_the_cap_takes_the_first_images_and_ledgers_the_rest() -> None:
    # 7 images, the 4th under two captions (alt and title): 8 records; 2 already rejected.
    body = (
        b"<html><body>"
        b'<img src="/0.jpg" alt="the first photo of a boat">'
        b'<img src="data:image/png;base64,AAAA" alt="an inline picture">'
        b'<img src="/1.jpg" alt="the second photo of a boat">'
        b'<img src="/2.jpg" alt="the third photo of a boat" title="a boat seen from afar">'
        b'<img src="/3.jpg" alt="the fourth photo of a boat">'
        b'<img src="/0.jpg" alt="the first photo of a boat again">'
        b'<img src="/4.jpg" alt="the fifth photo of a boat">'
        b"</body></html>"
    )
    page = extract_page(body, "http://site.test/", source="web")
    policed = apply_page_policy(page.records, page.meta, PagePolicy(max_images=2))
    assert len(policed.records) == len(page.records)  # nothing lost
    capped = [r for r in policed.records if r.reject_reason is RejectReason.OVER_PAGE_CAP]
    assert sorted({r.url.rsplit("/", 1)[1] for r in capped}) == ["2.jpg", "3.jpg", "4.jpg"]
    assert policed.capped == len(capped) == 4  # 2.jpg has two captions
    assert all(r.reject_value == 5 and r.reject_limit == 2 for r in capped)
    kept = [r for r in policed.records if r.status is Status.CANDIDATE]
    assert {r.url.rsplit("/", 1)[1] for r in kept} == {"0.jpg", "1.jpg"}
    assert len(kept) == 3  # 0.jpg under two captions
    assert any(r.reject_reason is RejectReason.DATA_URI for r in policed.records)
    uncapped = apply_page_policy(page.records, page.meta, PagePolicy(max_images=5))
    assert uncapped.capped == 0


def test_a_page_cap_under_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_images_per_page"):
        FetchConfig(max_images_per_page=0)


def test_wat_pages_get_the_same_policy() -> None:
    import io
    import json

    from test_sources import wat_envelope, wat_record
    from warcio.warcwriter import WARCWriter

    from pipeline.sources import iter_wat_candidates

    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    links = [
        {"path": "IMG@/src", "url": f"/m/{n}.jpg", "alt": f"a boat number {n}"} for n in range(4)
    ]
    plain = wat_envelope("https://a.example/p", links)
    opted = wat_envelope("https://b.example/p", links)
    opted["Envelope"]["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]["Head"][
        "Metas"
    ] = [{"name": "robots", "content": "noimageai"}]
    wat_record(writer, "https://a.example/p", json.dumps(plain).encode())
    wat_record(writer, "https://b.example/p", json.dumps(opted).encode())
    records = list(
        iter_wat_candidates(io.BytesIO(buffer.getvalue()), "wat", PagePolicy(max_images=3))
    )
    by_page: dict[str, list[RejectReason | None]] = {}
    for record in records:
        by_page.setdefault(record.page_url or "", []).append(record.reject_reason)
    assert by_page["https://a.example/p"] == [None, None, None, RejectReason.OVER_PAGE_CAP]
    assert by_page["https://b.example/p"] == [RejectReason.META_ROBOTS_OPT_OUT] * 4
    unpoliced = list(iter_wat_candidates(io.BytesIO(buffer.getvalue()), "wat"))
    assert all(r.reject_reason is None for r in unpoliced)


def test_warc_pages_get_the_same_policy() -> None:
    from pipeline.read_sources import _page_candidates

    page = ("http://w.test/", _page('<meta name="robots" content="noai">', 3), None, "f.warc#0")
    policed = _page_candidates(page, "warc", PagePolicy(max_images=2))
    assert [r.reject_reason for r in policed] == [RejectReason.META_ROBOTS_OPT_OUT] * 3
    plain = ("http://w.test/", _page("", 3), None, "f.warc#1")
    capped = _page_candidates(plain, "warc", PagePolicy(max_images=2))
    assert [r.reject_reason for r in capped] == [None, None, RejectReason.OVER_PAGE_CAP]
    assert [r.reject_reason for r in _page_candidates(page, "warc", None)] == [None] * 3
