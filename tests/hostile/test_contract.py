"""The upload contract against hostile records: refused with the field's path, never a crash."""

from __future__ import annotations

import contextlib
import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modstream.bank.bank import Bank
from modstream.contracts import ContractError, HashedBatch, HashedUpload, MediaSignals, UploadEvent
from modstream.engine import Engine
from modstream.settings import Settings

GOOD = {
    "schema": 1,
    "event_id": "e1",
    "platform": "p",
    "content_id": "c1",
    "uploader_id": "u1",
    "created_at": "2026-11-26T10:00:00Z",
    "text": "hello",
}


def with_(**changes) -> bytes:
    return orjson.dumps({**GOOD, **changes})


def refused(raw: bytes | str) -> str:
    with pytest.raises(ContractError) as error:
        UploadEvent.parse(raw)
    return str(error.value)


def test_duplicate_keys_are_refused_at_any_depth():
    assert "duplicate key 'event_id'" in refused(
        b'{"schema":1,"event_id":"a","event_id":"b","platform":"p","content_id":"c",'
        b'"uploader_id":"u","created_at":"2026-11-26T10:00:00Z","text":"x"}'
    )
    media = b'[{"media_id":"m","kind":"image","url":"https://a/x","url":"https://b/y"}]'
    raw = with_(media=[]).replace(b'"media":[]', b'"media":' + media)
    assert "duplicate key 'url'" in refused(raw)


@pytest.mark.parametrize(
    "value",
    ["a\x00b", "a\nb", "admin\u202egpj.exe", "a\u200bb", "\u2066x\u2069", "a\u2028b", "a\x7f"],
)
@pytest.mark.parametrize("field", ["event_id", "platform", "content_id", "uploader_id"])
def test_control_and_bidi_characters_in_ids_are_refused(field, value):
    assert f"upload.{field}: control or invisible characters" in refused(with_(**{field: value}))


def test_ids_may_be_any_printable_unicode():
    event = UploadEvent.parse(with_(uploader_id="ユーザー 42", event_id="évènement-🙂"))
    assert event.uploader_id == "ユーザー 42"


@pytest.mark.parametrize(
    ("data_b64", "message"),
    [
        ("", "empty"),
        ("QQ", "not valid base64"),
        ("QQ===", "not valid base64"),
        ("QR==", "not canonical"),
        ("Q Q==", "not valid base64"),
    ],
)
def test_inline_media_must_be_canonical_base64(data_b64, message):
    media = [{"media_id": "m", "kind": "image", "data_b64": data_b64}]
    assert message in refused(with_(media=media))


@pytest.mark.parametrize("path", ["dir/", "a\x00b.jpg"])
def test_paths_must_name_a_file(path):
    media = [{"media_id": "m", "kind": "image", "path": path}]
    assert "upload.media[0].path" in refused(with_(media=media))


@pytest.mark.parametrize(
    "created_at", ["1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z"]
)
def test_dates_out_of_range_are_refused(created_at):
    assert "upload.created_at: outside" in refused(with_(created_at=created_at))


def test_platforms_cannot_forge_another_platforms_uploader_key():
    """ "a/b" + "c" and "a" + "b/c" would both be a/b/c: a platform has no '/'."""
    assert "upload.platform: must not contain '/'" in refused(with_(platform="a/b"))
    assert UploadEvent.parse(with_(platform="a", uploader_id="b/c")).uploader_key == "a/b/c"


def test_two_platforms_with_one_event_id_get_two_decision_ids():
    engine = Engine.from_settings(Settings(), Bank())
    first = engine.decide(UploadEvent.parse(with_(platform="a")), [], decided_at=1.0)
    second = engine.decide(UploadEvent.parse(with_(platform="b")), [], decided_at=1.0)
    assert first.decision_id != second.decision_id


def test_hand_off_records_are_split_and_bounded():
    """Twelve 100,000-character posts and a short one: every event is carried, in records
    under the limit, in order."""
    long_text = "x" * 100_000
    uploads = [
        HashedUpload(UploadEvent.parse(with_(event_id=f"e{i}", text=long_text)), (), 1.0)
        for i in range(12)
    ]
    uploads.append(HashedUpload(UploadEvent.parse(with_(event_id="short")), (), 1.0))
    limit = 800_000
    records = list(HashedBatch.records([u.to_json(limit) for u in uploads], limit))
    assert len(records) > 1 and all(len(r) <= limit for r in records)
    carried = [u.event.event_id for r in records for u in HashedBatch.parse(r).uploads]
    assert carried == [f"e{i}" for i in range(12)] + ["short"]


def test_an_event_too_large_to_hand_off_keeps_its_text_and_loses_its_largest_signals():
    text = "\x01" * 100_000  # escapes to six bytes a character: the worst case
    frames = "0,100," + "f" * 64 + ",0.000\n"
    media = tuple(
        MediaSignals(f"m{i}", "video", {"vpdq": {"value": frames * 2000}}) for i in range(4)
    )
    upload = HashedUpload(UploadEvent.parse(with_(text=text)), media, 1.0)
    data = upload.to_json(800_000)
    assert len(data) <= 800_000
    back = HashedUpload.from_dict(orjson.loads(data))
    assert back.event.text == text
    errors = [m.error_reason for m in back.media]
    assert "too_large" in errors and any(m.signals for m in back.media)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_an_event_or_a_contract_error(raw):
    with contextlib.suppress(ContractError):
        UploadEvent.parse(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*GOOD, "media", "extra"]), json_values, min_size=1, max_size=8
    ),
    st.booleans(),
)
def test_mutated_events_are_an_event_or_a_contract_error(changes, keep_rest):
    body = {**GOOD, **changes} if keep_rest else changes
    try:
        event = UploadEvent.parse(json.dumps(body))
    except ContractError:
        return
    assert event.uploader_key.startswith(f"{event.platform}/")
