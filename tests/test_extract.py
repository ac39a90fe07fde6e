"""Candidate extraction from HTML: URLs, captions, rejects, charsets, and robustness to junk."""

from __future__ import annotations

import random

import pytest

from lait.record import CaptionSource, Record, RejectReason, Stage, Status, record_key
from lait.urls import InvalidUrlError
from pipeline.extract import (
    decode_html,
    extract_candidates,
    extract_links,
    extract_page,
    largest_srcset_url,
    parse_srcset,
    resolve_http_url,
)
from pipeline.extract.charset import normalise_charset

PAGE = "https://example.org/articles/cats.html"
PIXEL_GIF = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"


def extract(html: str | bytes, page_url: str = PAGE, **kwargs: str) -> list[Record]:
    data = html.encode("utf-8") if isinstance(html, str) else html
    return extract_candidates(data, page_url, source="test-web", **kwargs)


def accepted(records: list[Record]) -> list[Record]:
    return [r for r in records if r.status is Status.CANDIDATE]


def captions_by_source(records: list[Record]) -> dict[CaptionSource, str]:
    return {r.caption_source: r.caption for r in accepted(records)}


def only(records: list[Record]) -> Record:
    assert len(records) == 1, records
    return records[0]


def assert_well_formed(records: list[Record], page_url: str = PAGE) -> None:
    """Invariants of any page's records: unique keys, extract-stage rejects, pass-through."""
    assert len({r.key for r in records}) == len(records)
    for r in records:
        assert r.source == "test-web"
        assert r.page_url == page_url
        if r.status is Status.REJECTED:
            assert r.reject_stage is Stage.EXTRACT and r.reject_reason is not None
        else:
            assert r.status is Status.CANDIDATE
            assert r.url.startswith(("http://", "https://")) and "#" not in r.url
            assert r.caption and r.key == record_key(r.url, r.caption)


# -- srcset -----------------------------------------------------------------------------------


def test_srcset_picks_largest_width_descriptor() -> None:
    assert largest_srcset_url("s.jpg 320w, l.jpg 1280w, m.jpg 640w") == "l.jpg"


def test_srcset_picks_largest_density_and_treats_missing_as_1x() -> None:
    assert largest_srcset_url("a.jpg, b.jpg 2x, c.jpg 1.5x") == "b.jpg"
    assert largest_srcset_url("a.jpg 0.5x, b.jpg") == "b.jpg"


def test_srcset_keeps_commas_inside_urls() -> None:
    value = (
        "https://cdn.example.com/image/upload/w_400,h_300,c_fill/cat.jpg 400w,\n"
        "  https://cdn.example.com/image/upload/w_1600,h_1200,c_fill/cat.jpg 1600w"
    )
    assert [c.url for c in parse_srcset(value)] == [
        "https://cdn.example.com/image/upload/w_400,h_300,c_fill/cat.jpg",
        "https://cdn.example.com/image/upload/w_1600,h_1200,c_fill/cat.jpg",
    ]
    assert largest_srcset_url(value) == (
        "https://cdn.example.com/image/upload/w_1600,h_1200,c_fill/cat.jpg"
    )


def test_srcset_trailing_commas_and_data_uri_candidates() -> None:
    assert [c.url for c in parse_srcset("a.jpg, b.jpg 2x,, c.jpg 3x")] == [
        "a.jpg",
        "b.jpg",
        "c.jpg",
    ]
    # as in browsers, a comma glued between two URLs is part of one URL
    assert [c.url for c in parse_srcset("a.jpg,b.jpg 2x")] == ["a.jpg,b.jpg"]
    # a data: URI (with its own comma) loses to any real URL, even a "smaller" one
    assert largest_srcset_url(f"{PIXEL_GIF} 2000w, real.jpg 800w") == "real.jpg"
    assert largest_srcset_url("  ") is None


# -- image URLs -------------------------------------------------------------------------------


def test_img_srcset_largest_wins_over_src() -> None:
    html = '<p><img src="small.jpg" srcset="small.jpg 300w, big.jpg 1200w" alt="A cat"></p>'
    assert only(extract(html)).url == "https://example.org/articles/big.jpg"


def test_lazy_load_attribute_wins_over_placeholder_src() -> None:
    html = f"""
    <img src="{PIXEL_GIF}" data-src="/img/lazy-cat.jpg" alt="A lazy cat">
    <img src="/static/spacer.gif" data-original="/img/orig.jpg" alt="Original">
    <img src="/img/lqip.jpg" data-srcset="/img/a.jpg 400w, /img/b.jpg 900w" alt="Set">
    <img src="/img/blank.gif" data-lazy-src="/img/lazy2.jpg" alt="Lazy two">
    """
    urls = [r.url for r in extract(html)]
    assert urls == [
        "https://example.org/img/lazy-cat.jpg",
        "https://example.org/img/orig.jpg",
        "https://example.org/img/b.jpg",
        "https://example.org/img/lazy2.jpg",
    ]


def test_picture_source_used_when_img_src_is_a_placeholder() -> None:
    html = f"""<picture>
      <source type="image/webp" srcset="/p/cat-800.webp 800w, /p/cat-1600.webp 1600w">
      <img src="{PIXEL_GIF}" alt="A cat in a picture element">
    </picture>"""
    assert only(extract(html)).url == "https://example.org/p/cat-1600.webp"


def test_base_href_relative_and_protocol_relative_urls() -> None:
    html = """<html><head><base href="https://cdn.example.net/media/"></head><body>
      <img src="photos/dog.jpg" alt="Dog">
      <img src="/root.jpg" alt="Root">
      <img src="../up.jpg" alt="Up">
      <img src="//other.example.com/x.jpg" alt="Other">
      <a href="next.html#top">next</a></body></html>"""
    records = extract(html)
    assert [r.url for r in records] == [
        "https://cdn.example.net/media/photos/dog.jpg",
        "https://cdn.example.net/root.jpg",
        "https://cdn.example.net/up.jpg",
        "https://other.example.com/x.jpg",
    ]
    links = extract_links(html.encode(), PAGE)
    assert links == ["https://cdn.example.net/media/next.html"]


def test_relative_urls_resolve_against_page_without_base() -> None:
    records = extract('<img src="img/a.jpg" alt="A"><img src="/b.jpg" alt="B">')
    assert [r.url for r in records] == [
        "https://example.org/articles/img/a.jpg",
        "https://example.org/b.jpg",
    ]


def test_url_whitespace_trimmed_and_fragment_removed() -> None:
    html = '<img src="  \n /img/my cat.jpg#section \t" alt="Trim">'
    assert only(extract(html)).url == "https://example.org/img/my%20cat.jpg"


# -- captions ---------------------------------------------------------------------------------


def test_alt_title_and_figcaption_give_three_candidates() -> None:
    html = """<figure>
      <img src="/cat.jpg" alt="A tabby cat" title="Tabby on a sofa">
      <figcaption>Our   cat, <b>Mr.</b> Whiskers,
        asleep.</figcaption>
    </figure>"""
    records = extract(html)
    assert_well_formed(records)
    assert captions_by_source(records) == {
        CaptionSource.ALT: "A tabby cat",
        CaptionSource.TITLE: "Tabby on a sofa",
        CaptionSource.SURROUNDING: "Our cat, Mr. Whiskers, asleep.",
    }
    assert {r.url for r in records} == {"https://example.org/cat.jpg"}


def test_figcaption_before_the_image_counts_too() -> None:
    html = "<figure><figcaption>Caption first</figcaption><img src=a.jpg></figure>"
    assert only(extract(html)).caption == "Caption first"


def test_surrounding_text_is_the_enclosing_paragraph() -> None:
    html = """<div><p>Before the photo.</p>
      <p>A heron <img src="heron.jpg"> standing in the river.</p>
      <p>After the photo.</p></div>"""
    record = only(extract(html))
    assert record.caption_source is CaptionSource.SURROUNDING
    assert record.caption == "A heron standing in the river."


def test_surrounding_text_is_bounded_and_centred_on_the_image() -> None:
    before = " ".join(f"before{i}" for i in range(100))
    after = " ".join(f"after{i}" for i in range(100))
    record = only(extract(f"<p>{before} <img src=x.jpg> {after}</p>"))
    assert 100 < len(record.caption) <= 300
    assert "before99" in record.caption and "after0" in record.caption
    assert "before0 " not in record.caption and "after99" not in record.caption
    # cut at word boundaries
    assert all(w.startswith(("before", "after")) for w in record.caption.split())
    words = record.caption.split()
    assert words[0] in before.split() and words[-1] in after.split()


def test_script_and_style_text_is_not_a_caption() -> None:
    html = "<p><script>var x = 'not text';</script><style>p{}</style>Real words <img src=a.jpg></p>"
    assert only(extract(html)).caption == "Real words"


def test_entities_unescaped_and_whitespace_normalised() -> None:
    html = (
        "<p>Caf&eacute; &amp; croissant&nbsp;time"
        '<img src="a.jpg" alt="Tom &amp; Jerry &lt;3&#33;" title="  line\n\tbreak  "></p>'
    )
    assert captions_by_source(extract(html)) == {
        CaptionSource.ALT: "Tom & Jerry <3!",
        CaptionSource.TITLE: "line break",
        CaptionSource.SURROUNDING: "Café & croissant time",
    }


def test_identical_captions_from_two_sources_are_one_candidate() -> None:
    html = '<figure><img src="a.jpg" alt="Same text"><figcaption>Same  text</figcaption></figure>'
    record = only(extract(html))
    assert record.caption_source is CaptionSource.ALT


# -- malformed markup -------------------------------------------------------------------------


def test_unclosed_paragraphs_and_list_items_close_implicitly() -> None:
    html = """<body><p>First paragraph <img src=a.jpg>
      <p>Second paragraph <img src=b.jpg>
      <ul><li>Item one <img src=c.jpg><li>Item two <img src=d.jpg></ul>
      <table><tr><td>Cell A <img src=e.jpg><td>Cell B <img src=f.jpg></table>"""
    captions = [r.caption for r in extract(html)]
    assert captions == [
        "First paragraph",
        "Second paragraph",
        "Item one",
        "Item two",
        "Cell A",
        "Cell B",
    ]


def test_broken_markup_still_yields_candidates() -> None:
    html = """<html><body><div class="post"><p>Broken <b>bold <i>italic</p>
      </span></div></div></div><img src="one.jpg" alt="first"
      <img src="two.jpg" alt="second"><p>unclosed <img src='three.jpg' alt=third>
      <![weird]> <div <img src="four.jpg" alt="fourth">"""
    records = extract(html)
    assert_well_formed(records)
    # as in a browser: "one" swallows the next tag as attributes (the first src and alt
    # win), "four" sits inside a broken tag
    assert [(r.url.rsplit("/", 1)[-1], r.caption) for r in records] == [
        ("one.jpg", "first"),
        ("three.jpg", "third"),
        ("three.jpg", "unclosed"),
    ]


def test_truncated_document_yields_what_came_before() -> None:
    html = '<p>Intro <img src="a.jpg" alt="Complete"><p>Tail <img src="b.jpg" alt="Cut of'
    records = extract(html)
    assert [r.caption for r in records if r.caption_source is CaptionSource.ALT] == ["Complete"]


# -- charsets ---------------------------------------------------------------------------------


def test_shift_jis_page_declared_in_meta() -> None:
    text = (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">'
        '</head><body><p>桜の写真 <img src="sakura.jpg" alt="満開の桜"></p></body></html>'
    )
    records = extract(text.encode("shift_jis"))
    assert captions_by_source(records) == {
        CaptionSource.ALT: "満開の桜",
        CaptionSource.SURROUNDING: "桜の写真",
    }
    assert decode_html(text.encode("shift_jis"))[1] == "cp932"


def test_windows_1252_page_from_http_header() -> None:
    html = (
        '<p>Cr\xe8me br\xfbl\xe9e \x96 recipe <img src="c.jpg" alt="Cr\xe8me \x93br\xfbl\xe9e\x94">'
    )
    data = html.encode("latin-1")
    records = extract(data, headers_charset="text/html; charset=windows-1252")
    assert captions_by_source(records)[CaptionSource.ALT] == "Crème “brûlée”"
    assert captions_by_source(records)[CaptionSource.SURROUNDING] == "Crème brûlée – recipe"


def test_header_charset_beats_meta_and_meta_charset_short_form() -> None:
    data = '<meta charset="utf-8"><img src="a.jpg" alt="na\xefve">'.encode("cp1252")
    assert extract(data, headers_charset="windows-1252")[0].caption == "naïve"
    data = '<meta charset="windows-1252"><img src="a.jpg" alt="na\xefve">'.encode("cp1252")
    assert extract(data)[0].caption == "naïve"


def test_utf8_mislabelled_as_latin1_is_read_as_utf8() -> None:
    data = '<img src="a.jpg" alt="Zürich – Bahnhof">'.encode()
    assert extract(data, headers_charset="ISO-8859-1")[0].caption == "Zürich – Bahnhof"


def test_undeclared_invalid_utf8_falls_back_to_cp1252_and_bom_wins() -> None:
    assert decode_html(b"caf\xe9 \x80")[0] == "café €"
    assert decode_html(b"\xef\xbb\xbfcaf\xc3\xa9", "windows-1252") == ("café", "utf-8-sig")
    assert decode_html("é".encode("utf-16"))[0] == "é"
    assert normalise_charset("no-such-charset") is None
    assert decode_html(b"\xff\xfe\x00", "no-such-charset")[0]  # never raises


# -- rejects: nothing is lost -----------------------------------------------------------------


def rejected_reasons(html: str) -> list[RejectReason | None]:
    return [r.reject_reason for r in extract(html)]


def test_data_uri_only_image_is_rejected_with_a_short_url() -> None:
    big = "data:image/png;base64," + "A" * 5000
    records = extract(f'<img src="{big}" alt="inline"><img src="{PIXEL_GIF}" alt="inline">')
    assert [r.reject_reason for r in records] == [RejectReason.DATA_URI] * 2
    assert all(len(r.url) <= 256 for r in records)
    assert records[0].key == record_key(big, "inline")
    assert records[0].key != records[1].key


@pytest.mark.parametrize(
    "img",
    [
        '<img src="/a.jpg" width="1" height="1" alt="px">',
        '<img src="/a.jpg" width="600" height="1" alt="rule">',
        '<img src="/a.jpg" style="width:1px;height:1px" alt="px">',
        '<img src="https://www.facebook.com/tr?id=1&ev=PageView" alt="fb">',
        '<img src="https://stats.g.doubleclick.net/r/collect?v=1" alt="dc">',
        '<img src="https://pixel.example.com/p.gif?u=1" alt="px">',
        '<img src="/t/pixel.gif?c=3" alt="px">',
        '<img src="/beacon" alt="b">',
        '<img src="/img/spacer_1x1.gif" alt="s">',
    ],
)
def test_tracking_pixels_are_rejected(img: str) -> None:
    assert rejected_reasons(img) == [RejectReason.TRACKING_PIXEL]


@pytest.mark.parametrize(
    "img",
    [
        '<img src="/favicon.png" alt="fav">',
        '<img src="/static/icons/home.png" alt="home">',
        '<img src="/ui/sprite.png" alt="s">',
        '<img src="/a.jpg" class="nav-icon small" alt="i">',
        '<img src="/a.jpg" class="emoji" alt="😀">',
        '<img src="/a.jpg" width="16" height="16" alt="small">',
        '<img src="/a.jpg" width="32" alt="small">',
    ],
)
def test_icons_are_rejected(img: str) -> None:
    assert rejected_reasons(img) == [RejectReason.ICON]


@pytest.mark.parametrize(
    "img",
    [
        '<img src="/gallery/pixel-art-castle.png" alt="Pixel art">',
        '<img src="/shop/silicone-mould.jpg" alt="Mould">',
        '<img src="/race/track.jpg" alt="Track">',
        '<img src="https://res.example.com/c_fill,ar_1x1,w_400/cat.jpg" alt="Cat">',
        '<img src="/a.jpg" width="640" height="480" alt="Big">',
        '<img src="/a.jpg" width="100%" alt="Fluid">',
    ],
)
def test_ordinary_images_are_not_mistaken_for_pixels_or_icons(img: str) -> None:
    assert rejected_reasons(img) == [None]


def test_image_without_any_caption_is_rejected_no_caption() -> None:
    record = only(extract('<div><img src="/a.jpg" alt=""></div>'))
    assert record.reject_reason is RejectReason.NO_CAPTION
    assert record.caption == "" and record.url == "https://example.org/a.jpg"
    assert record.key == record_key(record.url, "")


@pytest.mark.parametrize(
    ("img", "detail"),
    [
        ('<img src="javascript:void(0)" alt="js">', "scheme"),
        ('<img src="ftp://example.org/a.jpg" alt="ftp">', "scheme"),
        ('<img src="http://[::1/a.jpg" alt="bad host">', "unparsable"),
        ('<img src="http:///a.jpg" alt="no host">', "host"),
        ('<img alt="no url at all">', "no URL"),
    ],
)
def test_invalid_urls_are_rejected(img: str, detail: str) -> None:
    record = only(extract(img))
    assert record.reject_reason is RejectReason.INVALID_URL
    assert detail in (record.reject_detail or "")


def test_rejected_image_with_captions_gives_one_reject_per_caption() -> None:
    records = extract('<p>Some text <img src="/favicon.ico" alt="Site" title="Home"></p>')
    assert [r.reject_reason for r in records] == [RejectReason.ICON] * 3
    assert len({r.key for r in records}) == 3


# -- keys -------------------------------------------------------------------------------------


def test_duplicate_pairs_on_a_page_are_kept_once_and_a_candidate_beats_a_reject() -> None:
    html = """
      <img class="lazy" src="/spacer.gif" data-src="/cat.jpg" alt="Cat">
      <noscript><img src="/cat.jpg" alt="Cat"></noscript>
      <img src="/dog.jpg" width="20" height="20" alt="Dog">
      <img src="/dog.jpg" alt="Dog">
      <img src="/dog.jpg" alt="Dog">"""
    records = extract(html)
    assert_well_formed(records)
    assert [(r.url, r.caption, r.status) for r in records] == [
        ("https://example.org/cat.jpg", "Cat", Status.CANDIDATE),
        ("https://example.org/dog.jpg", "Dog", Status.CANDIDATE),
    ]


def test_keys_are_stable_across_runs_and_source_passes_through() -> None:
    html = """<figure><img src="a.jpg" alt="A" title="T"><figcaption>F</figcaption></figure>
      <img src="data:," alt="d"><img src="b.jpg">"""
    first, second = extract(html), extract(html)
    assert first == second
    assert_well_formed(first)
    assert {r.source for r in first} == {"test-web"}
    assert {r.page_url for r in first} == {PAGE}


# -- links ------------------------------------------------------------------------------------


def test_extract_links_absolute_http_only_deduplicated() -> None:
    html = b"""<a href="/a#one">a</a><a href="/a#two">a again</a>
      <a href=" b.html ">b</a><a href="mailto:me@example.org">mail</a>
      <a href="javascript:void(0)">js</a><a href="https://other.example.com/x?q=1#f">x</a>
      <map><area href="/area.html"></map><a>no href</a><a href="http://[bad">bad</a>"""
    assert extract_links(html, PAGE) == [
        "https://example.org/a",
        "https://example.org/articles/b.html",
        "https://other.example.com/x?q=1",
        "https://example.org/area.html",
    ]


def test_extract_page_returns_records_links_and_encoding_from_one_parse() -> None:
    result = extract_page(
        b'<p>Hi <img src="a.jpg" alt="A"></p><a href="/n">n</a>', PAGE, source="test-web"
    )
    assert [r.caption for r in result.records] == ["A", "Hi"]
    assert result.links == ["https://example.org/n"]
    assert result.encoding == "utf-8" and result.parse_error is None


def test_resolve_http_url_errors() -> None:
    assert resolve_http_url("x.jpg", "http://h.example/a/") == "http://h.example/a/x.jpg"
    with pytest.raises(InvalidUrlError):
        resolve_http_url("x.jpg")  # relative without a base
    with pytest.raises(InvalidUrlError):
        resolve_http_url("http://h.example:99999/x.jpg")
    with pytest.raises(InvalidUrlError):
        resolve_http_url("http://h.example/" + "a" * 5000)


# -- fuzz -------------------------------------------------------------------------------------

REALISTIC = (
    b'<!DOCTYPE html><html><head><meta charset="utf-8"><base href="/site/">'
    b"<title>Gallery</title></head><body><article><h1>Birds &amp; trees</h1>"
    b'<figure><img src="robin.jpg" srcset="robin-400.jpg 400w, robin-1200.jpg 1200w" '
    b'alt="A robin" title="Robin"><figcaption>A robin in <em>winter</em></figcaption></figure>'
    b'<p>Text around <img data-src="oak.jpg" src="data:," alt="An oak"> the oak.</p>'
    b'<img src="/favicon.ico"><img src="p.gif" width=1 height=1><a href="next.html#x">next</a>'
    b"</article></body></html>"
)


def test_fuzz_random_bytes_never_crash() -> None:
    rng = random.Random(20240601)
    tokens = [
        b"<img src=",
        b"<p>",
        b"</p>",
        b"<figure>",
        b"<figcaption>",
        b"<![",
        b"<!--",
        b"&#",
        b"&amp",
        b'"',
        b"'",
        b"srcset=",
        b" 2x,",
        b"<base href=",
        b">",
        b"<",
        b"\xff\xfe",
        b"\x00",
        b"<script>",
        b"<meta charset=",
        b"shift_jis",
        b"&#x110000;",
    ]
    for i in range(400):
        if i % 2:
            data = rng.randbytes(rng.randint(0, 600))
        else:
            data = b"".join(
                rng.choice(tokens) + rng.randbytes(rng.randint(0, 4))
                for _ in range(rng.randint(0, 60))
            )
        result = extract_page(
            data, PAGE, source="test-web", headers_charset=rng.choice([None, "utf-8", "bogus"])
        )
        assert_well_formed(result.records)
        assert all(link.startswith(("http://", "https://")) for link in result.links)


def test_fuzz_truncated_and_mutated_documents_never_crash() -> None:
    rng = random.Random(7)
    for cut in range(0, len(REALISTIC) + 1, 7):
        assert_well_formed(extract(REALISTIC[:cut]))
    for _ in range(200):
        data = bytearray(REALISTIC)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        assert_well_formed(extract(bytes(data)))
    full = extract(REALISTIC)
    assert {r.url for r in accepted(full)} == {
        "https://example.org/site/robin-1200.jpg",
        "https://example.org/site/oak.jpg",
    }
    assert sorted(r.reject_reason for r in full if r.reject_reason) == [
        RejectReason.ICON,
        RejectReason.TRACKING_PIXEL,
    ]
