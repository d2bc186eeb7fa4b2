"""The stages in memory: no broker, no Faust, milliseconds per test."""

from __future__ import annotations

import base64

import orjson
from stages import MemoryRecord, pipeline, records
from streaming import upload

from modstream.contracts import (
    DECISIONS_TOPIC,
    HASHED_TOPIC,
    TAKEDOWNS_TOPIC,
    VIDEO_TOPIC,
    BankEntry,
    HashedBatch,
)
from modstream.demo import encode, sample
from modstream.engine import hash_media
from modstream.stages.ports import guarded

BANNED = encode(sample("rocket"), quality=90)
PDQ = hash_media("m", "image", BANNED, 10**8).signals["pdq"]["value"]
ENTRY = BankEntry("tve", "rocket", "pdq", PDQ, (), "takedown", "")


def inline(data: bytes) -> list[dict]:
    return [{"media_id": "m1", "kind": "image", "data_b64": base64.b64encode(data).decode()}]


def decisions(out) -> dict[str, dict]:
    return {
        orjson.loads(value)["event_id"]: orjson.loads(value)
        for _, value, _ in out.sent[DECISIONS_TOPIC]
    }


async def test_an_upload_goes_from_hash_to_decision(tmp_path):
    hash_stage, decide_stage, out, _, metrics = pipeline(tmp_path, [ENTRY])
    batch = [
        upload("banned", media=inline(BANNED)),
        upload("calm", text="lovely weather at the lake"),
        (b"junk", b'{"schema": 1, "event_id": "bad"'),
        upload("film", media=[{"media_id": "v", "kind": "video", "url": "https://x.test/v"}]),
    ]
    await hash_stage.process(records("uploads", batch))
    # The invalid record is dead-lettered whole; the video event goes to the video stage.
    assert [(r.value, reason) for r, _, reason, _ in out.dead] == [(batch[2][1], "invalid_event")]
    assert [value for _, value, _ in out.sent[VIDEO_TOPIC]] == [batch[3][1]]
    handed = [u for r in out.as_records(HASHED_TOPIC) for u in HashedBatch.parse(r.value).uploads]
    assert {u.event.event_id for u in handed} == {"banned", "calm"}
    assert all(u.event.media == () for u in handed)  # only the signals travel on

    await decide_stage.process(out.as_records(HASHED_TOPIC))
    decided = decisions(out)
    assert decided["banned"]["verdict"] == "takedown"
    assert decided["calm"]["verdict"] == "allow"
    assert [orjson.loads(v)["event_id"] for _, v, _ in out.sent[TAKEDOWNS_TOPIC]] == ["banned"]
    sample_text = metrics.registry.get_sample_value(
        "modstream_decisions_total", {"verdict": "takedown", "platform": "test"}
    )
    assert sample_text == 1.0


async def test_one_bad_item_is_that_items_error_and_the_banned_one_still_acts(tmp_path):
    hash_stage, decide_stage, out, _, _ = pipeline(tmp_path, [ENTRY])
    media = [
        {"media_id": "bad", "kind": "image", "url": "http://[127.0.0.6]:1/"},
        {"media_id": "local", "kind": "image", "path": "a.jpg"},  # no media root
        *inline(BANNED),
    ]
    await hash_stage.process(records("uploads", [upload("mixed", media=media)]))
    await decide_stage.process(out.as_records(HASHED_TOPIC))
    decision = decisions(out)["mixed"]
    assert decision["verdict"] == "takedown"
    assert {e["media_id"]: e["reason"] for e in decision["media_errors"]} == {
        "bad": "bad_url",
        "local": "path_disabled",
    }


async def test_three_strikes_put_the_next_post_under_review(tmp_path):
    hash_stage, decide_stage, out, strikes, _ = pipeline(tmp_path, [ENTRY])
    banned = [upload(f"strike-{i}", media=inline(BANNED), uploader="bob") for i in range(3)]
    await hash_stage.process(records("uploads", banned))
    await decide_stage.process(out.as_records(HASHED_TOPIC))
    assert len(strikes[b"test/bob"]["strikes"]) == 3
    out.sent.clear()
    body = orjson.loads(upload("later", text="lovely weather at the lake", uploader="bob")[1])
    later = (b"k", orjson.dumps({**body, "created_at": "2026-11-26T11:00:00Z"}))
    await hash_stage.process(records("uploads", [later]))
    await decide_stage.process(out.as_records(HASHED_TOPIC))
    decision = decisions(out)["later"]
    assert decision["verdict"] == "review"
    assert "repeat_uploader" in {e["kind"] for e in decision["evidence"]}


async def test_a_redelivered_record_is_decided_identically(tmp_path):
    hash_stage, decide_stage, out, _, _ = pipeline(tmp_path, [ENTRY])
    await hash_stage.process(records("uploads", [upload("once", media=inline(BANNED))]))
    hashed = out.as_records(HASHED_TOPIC)
    await decide_stage.process(hashed)
    await decide_stage.process(hashed)  # after a crash before the commit
    first, second = (v for _, v, _ in out.sent[DECISIONS_TOPIC])
    assert first == second


async def test_bound_platforms_refuse_other_platforms_and_the_shared_topic(tmp_path):
    hash_stage, _, out, _, _ = pipeline(tmp_path, platforms=("alpha",))
    body = orjson.loads(upload("e", text="hi")[1])
    forged = orjson.dumps({**body, "platform": "beta"})
    await hash_stage.process(
        [
            MemoryRecord("uploads.platform.alpha", 0, 0, b"k", forged),
            MemoryRecord("uploads", 0, 1, b"k", orjson.dumps({**body, "platform": "alpha"})),
        ]
    )
    assert [reason for _, _, reason, _ in out.dead] == ["platform_mismatch", "unbound_topic"]
    assert not out.sent[HASHED_TOPIC]


async def test_long_posts_are_split_over_bounded_records(tmp_path):
    hash_stage, decide_stage, out, _, _ = pipeline(tmp_path, max_record_bytes=800_000)
    long_text = "lorem ipsum dolor " * 5_555
    batch = [upload(f"long-{i}", text=long_text, uploader="same") for i in range(12)]
    await hash_stage.process(records("uploads", [*batch, upload("short", text="hi")]))
    sent = out.sent[HASHED_TOPIC]
    assert len(sent) > 2 and all(len(value) <= 800_000 for _, value, _ in sent)
    await decide_stage.process(out.as_records(HASHED_TOPIC))
    assert set(decisions(out)) == {f"long-{i}" for i in range(12)} | {"short"}


async def test_a_stage_that_fails_dead_letters_its_batch_and_goes_on(tmp_path):
    _, _, out, _, _ = pipeline(tmp_path)

    async def broken(batch):
        raise RuntimeError("a bug")

    batch = records("uploads.hashed", [(b"a", b"{}"), (b"b", b"{}")])
    await guarded("decide", broken, batch, out)
    assert [(r.offset, reason, stage) for r, _, reason, stage in out.dead] == [
        (0, "internal_error", "decide"),
        (1, "internal_error", "decide"),
    ]
    assert "a bug" in out.dead[0][1]


async def test_text_is_normalised_once_and_matched_in_the_batch_lookup(tmp_path):
    statement = BankEntry("tve", "stmt-1", "text", "join the caravan now brothers", (), "takedown")
    hash_stage, decide_stage, out, _, _ = pipeline(tmp_path, [statement])
    post = "JOIN the Caravan — now, brothers!!"
    await hash_stage.process(records("uploads", [upload("copy", text=post)]))
    (handed,) = [
        u for r in out.as_records(HASHED_TOPIC) for u in HashedBatch.parse(r.value).uploads
    ]
    assert handed.normalized_text == "join the caravan now brothers"
    looked_up = []
    real_lookup = decide_stage.engine.lookup

    def lookup(media, texts):
        looked_up.extend(texts)
        return real_lookup(media, texts)

    decide_stage.engine.lookup = lookup
    await decide_stage.process(out.as_records(HASHED_TOPIC))
    assert looked_up == ["join the caravan now brothers"]  # off the loop, with the media
    decision = decisions(out)["copy"]
    assert decision["verdict"] == "takedown"
    assert [e["entry_id"] for e in decision["evidence"] if e["kind"] == "text_match"] == ["stmt-1"]


async def test_two_platforms_with_one_event_id_keep_their_own_text_scores(tmp_path):
    hash_stage, decide_stage, out, _, _ = pipeline(tmp_path)
    texts = {"alpha": "lovely weather at the lake", "beta": "glory to the martyrs, join us"}
    batch = []
    for platform, text in texts.items():
        body = orjson.loads(upload("same-id", text=text)[1])
        batch.append((b"k", orjson.dumps({**body, "platform": platform})))
    await hash_stage.process(records("uploads", batch))
    handed = [u for r in out.as_records(HASHED_TOPIC) for u in HashedBatch.parse(r.value).uploads]
    by_platform = {u.event.platform: u for u in handed}
    for platform, text in texts.items():
        expected = decide_stage.engine.scorer.score(text)
        assert by_platform[platform].text_score == expected, platform
