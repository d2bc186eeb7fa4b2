"""The review loop in memory: human precedence, feedback into banks, negative banks."""

from __future__ import annotations

import orjson
import pytest
from stages import loop, records
from streaming import inline, upload

from modstream.bank.bank import Bank
from modstream.bank.controls import BankControls
from modstream.contracts import (
    DECISIONS_TOPIC,
    HASHED_TOPIC,
    REINSTATEMENTS_TOPIC,
    REVIEW_CASES_TOPIC,
    REVIEWS_TOPIC,
    TAKEDOWNS_TOPIC,
    BankConfig,
    BankEntry,
    ContractError,
    PlatformPolicy,
    ReviewOutcome,
    UploadEvent,
    dumps,
)
from modstream.decide.review import (
    HumanVerdict,
    HumanVerdicts,
    ReviewCase,
    apply_outcome,
    false_positive_bank,
)
from modstream.demo import encode, sample
from modstream.engine import Engine, hash_media, struck
from modstream.settings import Settings

PROPAGANDA = "Glory to our martyrs! Rise up, brothers, and join the ranks."  # a text review
ROCKET = encode(sample("rocket"), quality=90)
NEWS = encode(sample("rocket"), quality=60)  # the same picture, another file: a news photo
PDQ = hash_media("m", "image", ROCKET, 10**8).signals["pdq"]["value"]
SHARED = BankEntry("shared", "rocket", "pdq", PDQ, ("tve",), "takedown", "")


def outcome(decision: dict, verdict: str, reviewer: str = "rev-1", **more) -> bytes:
    return orjson.dumps(
        {
            "schema": 1,
            "decision_id": decision["decision_id"],
            "event_id": decision["event_id"],
            "platform": decision["platform"],
            "content_id": decision["content_id"],
            "outcome": verdict,
            "reviewer": reviewer,
            "decided_at": "2026-11-30T09:00:00Z",
            **more,
        }
    )


def sent(lp, topic: str) -> list[dict]:
    return [orjson.loads(value) for _, value, _ in lp.out.sent[topic]]


def decided(lp, event_id: str) -> dict:
    return [d for d in sent(lp, DECISIONS_TOPIC) if d["event_id"] == event_id][-1]


async def run(lp, *events: tuple[bytes, bytes]) -> None:
    before = len(lp.out.sent[HASHED_TOPIC])
    await lp.hash.process(records("uploads", list(events)))
    await lp.decide.process(lp.out.as_records(HASHED_TOPIC)[before:])


def test_an_outcome_is_checked_field_by_field():
    good = orjson.loads(outcome({"decision_id": "d", "event_id": "e", "platform": "p",
                                 "content_id": "c"}, "confirm"))  # fmt: skip
    assert ReviewOutcome.parse(orjson.dumps(good)).outcome == "confirm"
    for change, field in [
        ({"outcome": "maybe"}, "review_outcome.outcome"),
        ({"decided_at": "yesterday"}, "review_outcome.decided_at"),
        ({"reviewer": "a\u202eb"}, "review_outcome.reviewer"),
        ({"labels": ["x" * 65]}, "review_outcome.labels"),
        ({"extra": 1}, "unknown field"),
    ]:
        with pytest.raises(ContractError, match=field):
            ReviewOutcome.parse(orjson.dumps({**good, **change}))


async def test_a_confirmed_text_review_banks_the_text_and_its_repost_is_taken_down(tmp_path):
    lp = loop(tmp_path)
    lp.controls.apply("platform/test", PlatformPolicy(auto_bank="test-own").to_json())
    await run(lp, upload("post-1", text=PROPAGANDA))
    first = decided(lp, "post-1")
    assert first["verdict"] == "review"
    assert [d["event_id"] for d in sent(lp, REVIEWS_TOPIC)] == ["post-1"]
    assert (
        ReviewCase.parse(lp.out.sent[REVIEW_CASES_TOPIC][0][1]).decision.decision_id
        == (first["decision_id"])
    )

    await lp.outcomes([outcome(first, "confirm", reason="call to violence", labels=["tve"])])
    human = decided(lp, "post-1")
    assert (human["source"], human["verdict"], human["supersedes"]) == (
        "human", "takedown", first["decision_id"],
    )  # fmt: skip
    assert human["review"]["reviewer"] == "rev-1"
    assert [d["event_id"] for d in sent(lp, TAKEDOWNS_TOPIC)] == ["post-1"]  # now acted on
    assert lp.bank.sizes() == {("test-own", "text"): 1}

    # Another uploader posts the same words: a known-text match takes it down at once.
    await run(lp, upload("post-2", text=PROPAGANDA, uploader="u2"))
    repost = decided(lp, "post-2")
    assert repost["verdict"] == "takedown"
    match = next(e for e in repost["evidence"] if e["kind"] == "text_match")
    assert match["bank"] == "test-own" and match["labels"] == ["tve"]


async def test_an_overturned_false_positive_stops_matching_that_file_only(tmp_path):
    lp = loop(tmp_path, [SHARED])
    await run(lp, upload("news", media=inline(NEWS)), upload("other", media=inline(ROCKET)))
    first = decided(lp, "news")
    assert first["verdict"] == "takedown"

    await lp.outcomes([outcome(first, "overturn", reason="news report")])
    human = decided(lp, "news")
    assert (human["source"], human["verdict"]) == ("human", "allow")
    assert [d["event_id"] for d in sent(lp, REINSTATEMENTS_TOPIC)] == ["news"]
    assert lp.controls.bank(false_positive_bank("test")) == BankConfig(
        negative=True, platforms=("test",)
    )
    # The same file again, as another post: the shared entry's match is suppressed, and
    # the human verdict on its exact hash stands.
    await run(lp, upload("news-again", media=inline(NEWS), uploader="u9"))
    again = decided(lp, "news-again")
    assert again["verdict"] == "allow"
    kinds = {e["kind"]: e for e in again["evidence"]}
    assert kinds["human_verdict"]["action"] == "allow"
    suppressed = kinds["suppressed_match"]
    assert (suppressed["bank"], suppressed["entry_id"], suppressed["action"]) == (
        "shared", "rocket", "allow",
    )  # fmt: skip
    assert suppressed["parts"][-1]["suppressed_by"].startswith(f"{false_positive_bank('test')}/")
    # The entry still takes down every other file it matches.
    await run(lp, upload("other-again", media=inline(ROCKET), uploader="u8"))
    assert decided(lp, "other-again")["verdict"] == "takedown"
    assert (
        lp.metrics.registry.get_sample_value(
            "modstream_entry_outcomes_total",
            {"bank": "shared", "entry_id": "rocket", "outcome": "overturn"},
        )
        == 1.0
    )


async def test_a_repeated_outcome_changes_nothing_and_bad_ones_are_dead_letters(tmp_path):
    lp = loop(tmp_path, [SHARED])
    await run(lp, upload("a", media=inline(ROCKET)))
    first = decided(lp, "a")
    await lp.outcomes([outcome(first, "confirm")])
    count = len(sent(lp, DECISIONS_TOPIC))
    await lp.outcomes([outcome(first, "confirm")])  # the review tool sent it twice
    assert len(sent(lp, DECISIONS_TOPIC)) == count
    await lp.outcomes(
        [
            b'{"schema": 1, "outcome": "confirm"}',
            outcome({**first, "decision_id": "no-such-decision"}, "confirm"),
            outcome({**first, "content_id": "another"}, "overturn"),
        ]
    )
    reasons = [reason for _, _, reason, _ in lp.out.dead]
    assert reasons == ["invalid_outcome", "unknown_decision", "outcome_mismatch"]
    assert len(sent(lp, DECISIONS_TOPIC)) == count


async def test_a_human_verdict_outlives_redelivery_and_reaches_identical_reuploads(tmp_path):
    lp = loop(tmp_path, [SHARED])
    await run(lp, upload("a", media=inline(ROCKET)))
    first = decided(lp, "a")
    await lp.outcomes([outcome(first, "overturn")])
    await run(lp, upload("a", media=inline(ROCKET)))  # the platform sends the event again
    redelivered = decided(lp, "a")
    assert redelivered["source"] == "automated" and redelivered["verdict"] == "allow"
    assert redelivered["decision_id"] == first["decision_id"]
    assert [s[0] for s in lp.strikes[b"test/u1"]["strikes"]] == ["a"]  # the first decision's

    # Escalation keeps the content in review, over automation.
    await run(lp, upload("b", text=PROPAGANDA))
    await lp.outcomes([outcome(decided(lp, "b"), "escalate")])
    assert decided(lp, "b")["verdict"] == "review"
    assert sent(lp, REVIEWS_TOPIC)[-1]["source"] == "human"


def test_precedence_picks_the_latest_human_verdict_on_content_or_file():
    verdicts = HumanVerdicts()
    event = UploadEvent.parse(upload("x", text="hi")[1])
    media = (hash_media("m", "image", ROCKET, 10**8),)
    md5 = media[0].signals["md5"]["value"]
    older = HumanVerdict("test", "takedown", "confirm", "h1", "d1", 100.0)
    newer = HumanVerdict("test", "allow", "overturn", "h2", "d2", 200.0)
    verdicts.apply("test/content/c-x", older.to_json())
    assert verdicts.find("test", event.content_id, ()) == older
    verdicts.apply(f"test/md5/{md5}", newer.to_json())
    assert verdicts.find("test", event.content_id, media) == newer
    assert verdicts.find("other-platform", event.content_id, media) is None
    engine = Engine.from_settings(Settings(), Bank())
    decision = engine.decide(event, media, 1.0, human=newer)
    assert decision.verdict == "allow" and decision.evidence[0].kind == "human_verdict"
    assert not struck(engine.decide(event, media, 1.0, prior_strikes=9, human=newer))


def test_negative_banks_protect_only_their_platforms_and_named_banks():
    md5 = hash_media("m", "image", NEWS, 10**8).signals["md5"]["value"]
    controls = BankControls()
    bank = Bank(controls=controls)
    for entry in [
        SHARED,
        BankEntry("other", "rocket2", "pdq", PDQ, (), "review", ""),
        BankEntry("agency-photos", "n1", "md5", md5, (), "allow", ""),
    ]:
        bank.apply(entry.key, entry)
    config = BankConfig(negative=True, platforms=("news-site",), suppresses=("shared",))
    controls.apply("bank/agency-photos", config.to_json())
    engine = Engine.from_settings(Settings(), bank)
    media = (hash_media("m", "image", NEWS, 10**8),)

    def evidence(platform: str) -> dict[str, tuple[str, str]]:
        event = UploadEvent.parse(
            dumps({**orjson.loads(upload("x", text="photo")[1]), "platform": platform})
        )
        found = engine.decide(event, media, 1.0).evidence
        return {e.bank: (e.kind, e.action) for e in found if e.bank}

    assert evidence("news-site") == {
        "shared": ("suppressed_match", "allow"),  # named: suppressed
        "other": ("hash_match", "review"),  # not named: still acts
    }
    assert evidence("forum") == {
        "shared": ("hash_match", "takedown"),  # another platform: not protected
        "other": ("hash_match", "review"),
    }


def test_confirm_banks_only_unmatched_content_and_only_with_a_policy():
    event = UploadEvent.parse(upload("x", text=PROPAGANDA, media=inline(ROCKET))[1])
    media = (hash_media("m1", "image", ROCKET, 10**8),)
    engine = Engine.from_settings(Settings(), Bank())
    decision = engine.decide(event, media, 1.0, normalized_text="glory to our martyrs")
    case = ReviewCase(decision, media, "glory to our martyrs")
    confirm = ReviewOutcome.parse(outcome(orjson.loads(decision.to_json()), "confirm"))
    effects = apply_outcome(case, confirm, PlatformPolicy(auto_bank="own"))
    assert effects is not None
    # the rocket's sky is a plain border: its bare picture is banked beside it
    assert sorted(e.entry_id.rsplit(".", 1)[-1] + ":" + e.signal_type
                  for e in effects.bank_entries if e.signal_type != "text") == [
        "m1:md5", "m1:pdq", "trimmed:pdq",
    ]  # fmt: skip
    assert all(
        e.bank == "own" and e.provenance["reviewer"] == "rev-1" for e in effects.bank_entries
    )
    assert apply_outcome(case, confirm, PlatformPolicy()).bank_entries == ()
    assert apply_outcome(case, confirm, PlatformPolicy(), effects.applied) is None
