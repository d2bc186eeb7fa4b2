"""The text classifier: held-out quality, explanations, the shipped model, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modstream.cli import main
from modstream.text.classifier import (
    LinearTextClassifier,
    evaluate_splits,
    read_jsonl,
    split_by_family,
    train,
)
from modstream.text.lexicon import Lexicon

CORPUS = Path(__file__).resolve().parent.parent / "data" / "text" / "corpus.jsonl"


def texts_and_labels(rows):
    return [r["text"] for r in rows], [int(r["label"] == "propaganda") for r in rows]


@pytest.fixture(scope="module")
def held_out():
    rows = read_jsonl(CORPUS)
    train_rows, test_rows = split_by_family(rows, 0.25)
    assert not {r["family"] for r in train_rows} & {r["family"] for r in test_rows}
    return train(*texts_and_labels(train_rows)), test_rows


def test_held_out_families_meet_the_quality_targets():
    """Five ways of holding out a quarter of the families, every held-out prediction pooled,
    scored as in production (with the lexicon). The first corpus's families keep its
    targets; the whole corpus, coded registers and their hard negatives included, has a
    floor at what was measured (docs/text-scoring.md)."""
    rows, lexicon = read_jsonl(CORPUS), Lexicon.load()
    first = evaluate_splits([r for r in rows if not r["coded"]], 5, 0.25, 16, 0.5, lexicon)
    assert first["f1"] >= 0.90, first
    shares = first["flagged_share_by_category"]
    assert shares["news"] < 0.01 and shares["analysis"] < 0.01, shares
    whole = evaluate_splits(rows, 5, 0.25, 16, 0.5, lexicon)
    assert whole["f1"] >= 0.82 and whole["precision"] >= 0.90, whole
    shares = whole["flagged_share_by_category"]
    assert shares["news"] < 0.01 and shares["analysis"] < 0.06, shares


def test_context_not_vocabulary_decides(held_out):
    model, _ = held_out
    quoted = model.score(
        "A statement attributed to the group called the attacker a martyr and urged young men "
        "to join, a claim that could not be independently verified, police said."
    )
    calling = model.score(
        "Brothers, glory to our martyr! Rise and join the soldiers of the faith, honour awaits."
    )
    assert calling.score >= 0.5 > quoted.score
    assert calling.parts[0]["weight"] > 0 and quoted.parts[0]["weight"] < 0
    assert all({"term", "weight"} <= set(part) for part in calling.parts)


def test_explanation_adds_up_to_the_logit():
    model = LinearTextClassifier(
        {"w:join": 2.0, "w:join us": 1.0, "c: jo": 0.5, "cue:imperative": 1.5}, -1.0
    )
    scored = model.score("Join us")
    parts = {p["term"]: p["weight"] for p in scored.parts}
    # "join us" is shared by both words; " jo" belongs to "join"; the cue stands alone
    assert parts == {"join": 3.0, "us": 0.5, "[imperative]": 1.5}
    assert scored.score == pytest.approx(1 / (1 + 2.718281828 ** -(5.0 - 1.0)), abs=1e-3)


def test_shipped_model_is_reproducible_from_the_committed_corpus():
    shipped = LinearTextClassifier.load(lexicon=Lexicon.load())
    rows = read_jsonl(CORPUS)
    retrained = train(*texts_and_labels(rows), c=shipped.metrics["c"], lexicon=Lexicon.load())
    drift = max(abs(shipped.score(r["text"]).score - retrained.score(r["text"]).score)
                for r in rows)  # fmt: skip
    assert drift < 0.01
    assert shipped.metrics["holdout"]["f1"] >= 0.82


def test_train_and_eval_commands(tmp_path, capsys):
    rows = read_jsonl(CORPUS)[::3]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = tmp_path / "model.json"
    assert main(["text", "train", str(data), "--out", str(model), "--splits", "2"]) == 0
    assert "held out" in capsys.readouterr().out
    assert main(["text", "eval", str(data), "--model", str(model), "--threshold", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and "confusion matrix" in out and "threshold table" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "label": "maybe"}\n')
    assert main(["text", "eval", str(bad)]) == 2


STATEMENT = (
    "Statement number seven from the media office of the Iron Covenant. The soldiers of the "
    "covenant will remain steadfast, and every brother must answer the call of duty without "
    "delay, for the day of honour has come and the banners are raised over the valley."
)


def known_text_bank():
    from modstream.bank.bank import Bank
    from modstream.contracts import BankEntry

    bank = Bank()
    bank.apply("tve/text/s7", BankEntry("tve", "s7", "text", STATEMENT, (), "takedown", ""))
    return bank


def test_known_text_matches_copies_near_copies_and_copies_inside_longer_posts():
    from modstream.signals import get

    bank, text = known_text_bank(), get("text")

    def distance(post: str) -> int | None:
        found = bank.match("text", text.compute(post)["value"])
        return found[0].distance if found else None

    spoofed = STATEMENT.upper().replace("O", "\u041e").replace(" THE ", " THE\u200b ")
    assert distance(spoofed) == 0  # case, Cyrillic lookalikes and zero-width characters
    assert distance(STATEMENT.replace("steadfast", "strong").replace("delay", "fear")) <= 20
    pasted = f"lol look what they posted today!! {STATEMENT} crazy, share before it's gone"
    assert distance(pasted) == 0
    words = STATEMENT.split()
    three_quarters = " ".join(words[: len(words) * 3 // 4])
    assert 20 < distance(three_quarters) <= 40  # the review band
    assert distance(" ".join(words[: len(words) // 3])) is None  # a third: too little
    assert distance("Police said the Iron Covenant published a statement on Monday.") is None


def test_known_text_evidence_says_how_much_was_found():
    from modstream.contracts import UploadEvent
    from modstream.decide.policy import PolicyConfig
    from modstream.engine import Engine

    engine = Engine(known_text_bank(), LinearTextClassifier.load(), PolicyConfig())
    near = STATEMENT.replace("steadfast", "strong")
    event = UploadEvent("e1", "p", "c1", "u1", "2026-11-26T10:00:00Z", near, ())
    decision = engine.decide(event, (), decided_at=0.0)
    assert decision.verdict == "takedown"
    match = next(e for e in decision.evidence if e.kind == "text_match")
    assert match.entry_id == "s7" and 0 < match.distance <= match.threshold == 20
    assert "% of the known text is in the post" in match.detail
    report = "Officials said the group's statement was a propaganda stunt."
    news = UploadEvent("e2", "p", "c2", "u1", "2026-11-26T10:00:00Z", report, ())
    assert engine.decide(news, (), decided_at=0.0).verdict == "allow"


def test_coded_terms_raise_the_score_say_what_they_mean_and_spare_the_hard_negatives(tmp_path):
    from modstream.engine import _classifier
    from modstream.text.classifier import LinearTextClassifier
    from modstream.text.lexicon import Lexicon

    plain, coded = LinearTextClassifier.load(None), _classifier(None)
    post = "Read Siege. 1488."
    assert plain.score(post).score < 0.5 <= coded.score(post).score
    meanings = {p["term"]: p["meaning"] for p in coded.score(post).parts if "meaning" in p}
    assert set(meanings) == {"[coded: read siege]", "[coded: 1488]"}
    assert "Heil Hitler" in meanings["[coded: 1488]"]
    # Arabic, with its vowel marks and a stretched letter, is the same phrase.
    assert coded.score("بَاقِيَـــةٌ وَتَتَمَدَّدُ").score >= 0.5
    for negative in (
        "Researchers say the 'day of the rope' meme comes from a 1978 novel, the report found.",
        "Finally got a new high score on Tetris last night.",
        "All Saints day mass will be held at 10 am at St Mary's church.",
    ):
        assert coded.score(negative).score < 0.5, negative
    # A platform's own file: a new term, and a packaged one switched off (weight 0).
    own = tmp_path / "lexicon.json"
    own.write_text('{"version": 1, "terms": [{"phrase": "Clan X forever", "weight": 2.5, '
                   '"movement": "local", "meaning": "a banned group"}, '
                   '{"phrase": "1488", "weight": 0}]}')  # fmt: skip
    edited = LinearTextClassifier.load(None, Lexicon.load(own))
    terms = {p["term"] for p in edited.score("clan x forever 1488").parts}
    assert "[coded: clan x forever]" in terms and "[coded: 1488]" not in terms
    own.write_text('{"version": 1, "terms": [{"phrase": "x", "weight": 9}]}')
    with pytest.raises(ValueError, match="weight outside"):
        Lexicon.load(own)


def test_arabic_is_folded_before_it_is_compared():
    from modstream.formats.text import normalize_text

    assert normalize_text("الدَّوْلَةُ الإِسْلاَمِيَّة") == normalize_text("الدولة الاسلامية")
    assert normalize_text("باقيـــة") == normalize_text("باقيه")
    assert normalize_text("Plain ASCII, Unchanged!") == "plain ascii unchanged"
