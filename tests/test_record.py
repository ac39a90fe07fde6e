from __future__ import annotations

import dataclasses

import pytest

from lait.record import (
    METADATA_COLUMNS,
    METADATA_FIELDS,
    CaptionSource,
    Record,
    RejectReason,
    Stage,
    Status,
    record_key,
)


def test_key_is_stable_hex_and_depends_on_url_and_caption() -> None:
    key = record_key("http://a/b.jpg", "a red circle")
    assert key == record_key("http://a/b.jpg", "a red circle")
    assert key != record_key("http://a/b.jpg", "a blue circle")
    assert key != record_key("http://a/c.jpg", "a red circle")
    assert "." not in key and len(key) == 24 and int(key, 16) >= 0


def test_every_reason_belongs_to_one_stage() -> None:
    stages = {reason.stage for reason in RejectReason}
    assert stages == set(Stage)
    assert RejectReason.TOO_SMALL.stage is Stage.IMAGE_FILTER
    assert RejectReason.BLOCKED_ADDRESS.stage is Stage.FETCH


def test_rejected_sets_stage_and_drops_pixels() -> None:
    record = dataclasses.replace(
        Record.candidate(source="s", url="u", caption="c", caption_source=CaptionSource.ALT),
        image=b"x",
        image_format="jpg",
    )
    rejected = record.rejected(RejectReason.DUPLICATE_EXACT, "same bytes", duplicate_of="k0")
    assert rejected.status is Status.REJECTED
    assert rejected.reject_stage is Stage.DEDUPE
    assert rejected.image is None and rejected.duplicate_of == "k0"
    assert record.status is Status.CANDIDATE  # immutable


def test_accepting_needs_an_image() -> None:
    record = Record.candidate(source="s", url="u", caption="c", caption_source=CaptionSource.ALT)
    with pytest.raises(ValueError, match="without image bytes"):
        record.accepted()


def test_metadata_round_trip() -> None:
    record = Record.candidate(
        source="s", url="u", caption="c", caption_source=CaptionSource.LIST
    ).rejected(RejectReason.TIMEOUT, "5 s")
    metadata = record.metadata()
    assert set(metadata) == set(METADATA_COLUMNS) and "image" not in metadata
    assert metadata["reject_reason"] == "timeout" and metadata["caption_source"] == "list"
    assert Record.from_metadata(metadata) == record


def test_replacer_builds_what_replace_builds() -> None:
    import pickle

    from lait.record import make_replacer

    record = Record.candidate(
        source="s", url="u", caption="c", caption_source=CaptionSource.ALT
    ).rejected(RejectReason.TIMEOUT, "5 s")
    with_language = make_replacer("language", "language_score")
    fast = with_language(record, "en", 0.25)
    slow = dataclasses.replace(record, language="en", language_score=0.25)
    assert type(fast) is Record and fast == slow and hash(fast) == hash(slow)
    assert [getattr(fast, f) for f in METADATA_FIELDS] == [
        getattr(slow, f) for f in METADATA_FIELDS
    ]
    assert pickle.loads(pickle.dumps(fast)) == slow
    assert dataclasses.replace(fast, language="fr").language == "fr"
    assert record.language is None  # the source is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.language = "de"  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown or repeated"):
        make_replacer("langauge")
