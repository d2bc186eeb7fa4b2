import base64
import uuid

import orjson
import pytest

from modstream.contracts import (
    BankEntry,
    ContractError,
    DeadLetter,
    UploadEvent,
    decision_id_for,
    parse_bank_key,
)

VALID = {
    "schema": 1,
    "event_id": "e1",
    "platform": "p",
    "content_id": "c1",
    "uploader_id": "u1",
    "created_at": "2026-11-26T10:00:00Z",
    "text": "hello",
    "media": [{"media_id": "m1", "kind": "image", "data_b64": base64.b64encode(b"x").decode()}],
}


def with_(**changes):
    return orjson.dumps({**VALID, **changes})


def test_valid_upload_parses():
    event = UploadEvent.parse(orjson.dumps(VALID))
    assert event.media[0].source == "inline"
    assert event.uploader_key == "p/u1"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1,2]", "expected a JSON object"),
        (with_(schema=2), "unsupported version 2"),
        (with_(event_id=None), "upload.event_id: required"),
        (with_(event_id=7), "upload.event_id: expected str, got int"),
        (with_(surprise=1), "unknown field(s) surprise"),
        (with_(created_at="yesterday"), "not an ISO 8601 time"),
        (with_(created_at="2026-11-26T10:00:00"), "needs a UTC offset"),
        (with_(text=None, media=[]), "needs text or media"),
        (with_(media=[{"media_id": "m", "kind": "audio", "url": "https://x/y"}]), "kind: must be"),
        (with_(media=[{"media_id": "m", "kind": "image"}]), "exactly one of url"),
        (with_(media=[{"media_id": "m", "kind": "image", "url": "file:///etc/passwd"}]), "http"),
        (with_(media=[{"media_id": "m", "kind": "image", "data_b64": "!!!"}]), "not valid base64"),
        (
            with_(media=[{"media_id": "m", "kind": "image", "path": "a"}] * 2),
            "media_id values must be unique",
        ),
    ],
)
def test_invalid_uploads_name_the_problem(raw, message):
    with pytest.raises(ContractError, match=message.replace("(", r"\(").replace(")", r"\)")):
        UploadEvent.parse(raw)


def test_decision_id_is_deterministic_per_platform_event_and_policy():
    assert decision_id_for("p", "e1", "v1") == decision_id_for("p", "e1", "v1")
    assert decision_id_for("p", "e1", "v1") != decision_id_for("p", "e2", "v1")
    assert decision_id_for("p", "e1", "v1") != decision_id_for("p", "e1", "v2")
    assert decision_id_for("a", "e1", "v1") != decision_id_for("b", "e1", "v1")
    namespace = uuid.UUID("6f1c7a52-3b8e-4c4e-9d7a-6d6f64737472")
    for event_id in ("e1", "ünïcode-🙂", "x" * 500):  # a standard UUIDv5
        expected = uuid.uuid5(namespace, f"v1\x00p\x00{event_id}")
        assert decision_id_for("p", event_id, "v1") == str(expected)


def test_bank_entry_key_round_trip_allows_slashes_in_entry_id():
    entry = BankEntry.from_dict(
        {"schema": 1, "bank": "b", "entry_id": "a/b", "signal_type": "md5", "signal": "0" * 32}
    )
    assert parse_bank_key(entry.key) == ("b", "md5", "a/b")
    with pytest.raises(ContractError):
        parse_bank_key("only/two")


def test_dead_letter_keeps_original_bytes():
    letter = DeadLetter.of(
        b"\x00\xffraw", b"k", "bad", stage="ingest", topic="t", partition=0, offset=5, failed_at=1.0
    )
    assert base64.b64decode(letter.original_b64) == b"\x00\xffraw"
    assert base64.b64decode(letter.original_key_b64) == b"k"
