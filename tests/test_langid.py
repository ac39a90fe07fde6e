"""fastText language ID: the offline model, the decision rule and the Beam transform."""

from __future__ import annotations

import sys
from pathlib import Path

import apache_beam as beam
import pytest

from lait.models.langid import LanguageIdentifier, LanguageIdError, default_model_path
from lait.record import CaptionSource, Record, RejectReason, Status
from pipeline.langid import LanguageConfig, LanguageFilter, decide_language

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.filter_quality import beam_pipeline, collect


def test_offline_model_ships_in_a_pip_package() -> None:
    assert default_model_path().name == "lid.176.ftz"
    with pytest.raises(LanguageIdError, match="not found"):
        LanguageIdentifier("/nonexistent/lid.176.bin")


def test_short_english_is_kept_through_top_k() -> None:
    lid = LanguageIdentifier(k=3)
    scores = lid.predict(["a small yellow circle", "ein kleiner gelber Kreis", "line\nbreak"])
    assert next(iter(scores[0])) != "en"  # fastText's top guess is wrong here ...
    assert decide_language(scores[0], {"en": 0.05}).reason is None  # ... en is in the top 3
    assert decide_language(scores[1], {"en": 0.05}).reason is RejectReason.WRONG_LANGUAGE
    assert decide_language(scores[1], {}).language == "de"  # no wanted list: label only


def test_low_confidence_in_a_wanted_language() -> None:
    verdict = decide_language({"en": 0.4, "fr": 0.3}, {"en": 0.5})
    assert verdict.reason is RejectReason.LOW_LANGUAGE_CONFIDENCE
    assert decide_language({"fr": 0.9, "en": 0.06}, {"en": 0.05, "fr": 0.5}).language == "fr"


def test_transform_labels_rejects_and_passes_settled() -> None:
    captions = ["a large red circle above a small blue square", "un petit cercle rouge"]
    records = [
        Record.candidate(
            source="t", url=f"http://h/{i}", caption=c, caption_source=CaptionSource.ALT
        )
        for i, c in enumerate(captions)
    ]
    settled = records[0].rejected(RejectReason.ICON)
    with collect() as results:
        with beam_pipeline() as pipeline:
            results.add(pipeline | beam.Create([*records, settled]) | LanguageFilter())
        out = {(r.url, r.status): r for r in results.read()}
    english = out[("http://h/0", Status.CANDIDATE)]
    assert english.language == "en" and english.language_score is not None
    french = out[("http://h/1", Status.REJECTED)]
    assert french.reject_reason is RejectReason.WRONG_LANGUAGE and french.language == "fr"
    assert out[("http://h/0", Status.REJECTED)] == settled
    assert LanguageConfig().languages == {"en": 0.05}


def test_top_language_first_pass_decides_as_the_top_k_pass() -> None:
    from pipeline.langid.transform import IdentifyLanguage

    captions = [
        "a large red circle above a small blue square",
        "a small yellow circle",  # fastText's top guess is not en; en is in its top 3
        "ein kleiner gelber Kreis",
        "un petit cercle rouge\nsur fond bleu",
        "el perro negro",
        "",
        "IMG_1234.jpg",
    ] * 3
    records = [
        Record.candidate(
            source="t", url=f"http://h/{i}", caption=c, caption_source=CaptionSource.ALT
        )
        for i, c in enumerate(captions)
    ]
    records[4] = records[4].rejected(RejectReason.ICON)
    for languages in ({"en": 0.05}, {"en": 0.2, "de": 0.5, "fr": 0.01}, {}):
        config = LanguageConfig(languages=languages)
        two_pass, one_pass = IdentifyLanguage(config), IdentifyLanguage(config)
        two_pass.setup()
        one_pass.setup()
        one_pass.top_first = False
        first = list(two_pass.process(records))
        assert first == list(one_pass.process(records))
        assert [r.url for r in first] == [r.url for r in records]  # order kept
        assert first[4] is records[4]  # settled records pass through untouched
    # a batch the first pass settles too little of switches a worker to the top-k pass
    foreign = [r for r in records if r.caption.startswith(("ein", "el"))]
    two_pass = IdentifyLanguage(LanguageConfig())
    two_pass.setup()
    assert two_pass.top_first
    out = list(two_pass.process(foreign))
    assert not two_pass.top_first and out[0].reject_reason is RejectReason.WRONG_LANGUAGE
