"""Policy, text scoring and uploader history: pure functions."""

import time

from modstream.contracts import BankEntry, Evidence, MediaSignals, UploadEvent
from modstream.decide import history
from modstream.decide.policy import PolicyConfig, hash_action, text_action, verdict_for
from modstream.engine import struck
from modstream.formats.text import normalize_text
from modstream.scan import local_engine
from modstream.settings import Settings


def test_verdict_is_the_most_severe_action():
    assert verdict_for([]) == "allow"
    actions = [Evidence(kind="x", action=a) for a in ("allow", "review", "takedown")]
    assert verdict_for(actions) == "takedown"
    assert verdict_for(actions[:2]) == "review"


def test_hash_action_bands_and_hint():
    assert hash_action(10, 31, 45, "takedown") == "takedown"
    assert hash_action(10, 31, 45, "review") == "review"
    assert hash_action(40, 31, 45, "takedown") == "review"
    assert hash_action(46, 31, 45, "takedown") == "allow"


def test_text_alone_reviews_and_takes_down_only_when_very_high():
    config = PolicyConfig()  # the defaults: review from 0.5, takedown only from 0.995
    assert text_action(0.3, config) == "allow"
    assert text_action(0.9, config) == "review"
    assert text_action(0.995, config) == "takedown"


def test_normalization_defeats_case_punctuation_and_zero_width_tricks():
    assert normalize_text("Join\u200b the  CARAVAN!!") == normalize_text("join the caravan")
    assert normalize_text("\uff26\uff35\uff2c\uff2c width") == "full width"  # fullwidth letters


def test_history_counts_only_earlier_strikes_and_is_bounded():
    past = history.empty()
    for i in range(0, 200, 2):
        past = history.with_strike(past, f"e{i}", 1000.0 + i)
    assert len(past["strikes"]) == history.MAX_REMEMBERED
    assert history.has_strike(past, "e198") and not history.has_strike(past, "e0")
    assert history.prior_strikes(past, "e199", 1199.0, window_s=10) == 5  # e190..e198
    assert history.prior_strikes(past, "e198", 1199.0, window_s=10) == 4  # its own strike excluded


def event(text=None):
    return UploadEvent("e1", "p", "c1", "u1", "2026-11-26T10:00:00Z", text, ())


def test_engine_known_text_takes_down_and_decision_is_reproducible():
    known = "The soldiers of the caliphate will remain"
    engine = local_engine(
        Settings(), [BankEntry("tve", "s1", "text", known, ("statement",), "takedown", "")]
    )
    upload = event(text="THE soldiers of the Caliphate will remain!!")
    first = engine.decide(upload, [], decided_at=1.0)
    again = engine.decide(upload, [], decided_at=1.0)
    assert first == again and first.to_json() == again.to_json()
    assert first.verdict == "takedown" and struck(first)
    assert first.evidence[0].kind == "text_match" and first.evidence[0].entry_id == "s1"


def test_engine_media_error_and_repeat_uploader():
    engine = local_engine(Settings(on_media_error="review", repeat_strikes=2), [])
    broken = MediaSignals("m1", "image", {}, "truncated", "corrupt")
    decision = engine.decide(event(), [broken], decided_at=time.time())
    assert decision.verdict == "review"
    assert decision.media_errors[0]["reason"] == "corrupt"
    repeat = engine.decide(event(text="hello"), [], decided_at=1.0, prior_strikes=2)
    assert repeat.verdict == "review" and repeat.evidence[-1].kind == "repeat_uploader"
    assert not struck(repeat)
