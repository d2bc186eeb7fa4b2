"""The HTTP API in memory (the bank, its controls and a publisher that applies at once): the
HMA endpoints' shapes and errors, in milliseconds. The same requests against a real server on
a real broker: tests/test_http_api_kafka.py."""

from __future__ import annotations

import asyncio
import dataclasses
import io

import orjson
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from streaming import wait_until

from modstream.bank.bank import Bank
from modstream.bank.controls import BankControls
from modstream.contracts import (
    BANK_CONFIG_TOPIC,
    EXCHANGE_CONFIG_TOPIC,
    EXCHANGE_STATE_TOPIC,
    BankEntry,
    ExchangeState,
)
from modstream.demo import encode, sample
from modstream.engine import hash_media
from modstream.serve.app import build_api
from modstream.serve.backend import Backend
from modstream.serve.exchanges import ExchangeAdmin, ExchangeBook

ROCKET = encode(sample("rocket"), quality=90)
PDQ = hash_media("m", "image", ROCKET, 10**8).signals["pdq"]["value"]


class AppliedAtOnce:
    """A publisher that applies to the bank and its controls directly."""

    def __init__(self, bank: Bank, controls: BankControls) -> None:
        self.bank, self.controls = bank, controls
        self.exchanges = ExchangeBook()

    async def publish(self, topic, records) -> None:
        for key, value in records:
            if topic == EXCHANGE_CONFIG_TOPIC:
                self.exchanges.config_table.apply(key.decode(), value)
            elif topic == EXCHANGE_STATE_TOPIC:
                self.exchanges.state_table.apply(key.decode(), value)
            elif topic == BANK_CONFIG_TOPIC:
                self.controls.apply(key.decode(), value)
            else:
                self.bank.apply(key.decode(), None if value is None else BankEntry.parse(value))


def memory_backend(hasher=None, fetch=None, **options) -> Backend:
    """A backend over an in-memory bank that applies every write at once, hashing in a
    thread and fetching nothing (unless given ``hasher``/``fetch``)."""
    controls = BankControls()
    bank = Bank(controls=controls)

    async def hash_in_thread(kind: str, data: bytes):
        return await asyncio.to_thread(hash_media, "m", kind, data, 10**8)

    async def no_fetch(url: str) -> bytes:
        raise AssertionError("no fetching in memory")

    publisher = AppliedAtOnce(bank, controls)
    hasher, fetch = hasher or hash_in_thread, fetch or no_fetch
    return Backend(bank, controls, publisher, hasher, fetch, **options)


@pytest.fixture
def api() -> TestClient:
    return TestClient(build_api(memory_backend()), base_url="http://localhost")


def test_banks_signals_lookup_disable_and_delete_as_hma_answers(api: TestClient) -> None:
    assert api.get("/status").text == "I-AM-ALIVE"
    assert api.post("/c/banks", json={"name": "TEST_BANK"}).status_code == 201
    assert api.post("/c/banks", json={"name": "TEST_BANK"}).json() == {
        "message": "Bank already exists"
    }
    assert api.post("/c/banks", json={"name": "lower"}).status_code == 400
    invalid = api.post("/c/banks", json={})
    assert invalid.status_code == 422 and invalid.json()[0]["loc"] == ["body", "name"]
    assert api.get("/c/banks").json() == [{"matching_enabled_ratio": 1.0, "name": "TEST_BANK"}]
    assert api.get("/c/bank/NOPE").json() == {"message": "bank 'NOPE' not found"}

    added = api.post("/c/bank/TEST_BANK/signal", json={"pdq": PDQ}).json()
    assert added["signals"] == {"pdq": PDQ} and isinstance(added["id"], int)
    cid = added["id"]
    assert api.get("/m/lookup", params={"signal_type": "pdq", "signal": PDQ}).json() == {
        "TEST_BANK": [{"bank_content_id": cid, "distance": "0"}]
    }
    assert api.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": PDQ}).json() == {
        "matches": [cid]
    }
    bad = api.get("/m/lookup", params={"signal_type": "pdq", "signal": PDQ.upper()})
    assert bad.status_code == 400 and bad.json() == {"message": "invalid signal: invalid PDQ hash"}
    assert api.get("/m/lookup").json() == {
        "message": "Either url or both signal and signal_type are required"
    }
    shown = api.get(f"/c/bank/TEST_BANK/content/{cid}", params={"include_signals": True}).json()
    assert shown["signals"] == {"pdq": PDQ} and shown["id"] == cid

    assert api.put(f"/c/bank/TEST_BANK/content/{cid}", json={"disable_until_ts": 4102444800})
    assert api.get("/m/lookup", params={"signal_type": "pdq", "signal": PDQ}).json() == {}
    api.put(f"/c/bank/TEST_BANK/content/{cid}", json={"disable_until_ts": 1})
    assert api.get("/m/lookup", params={"signal_type": "pdq", "signal": PDQ}).json()

    assert api.put("/c/bank/TEST_BANK", json={"enabled_ratio": 0.0}).status_code == 200
    assert api.get("/m/lookup", params={"signal_type": "pdq", "signal": PDQ}).json() == {}
    api.put("/c/bank/TEST_BANK", json={"enabled": True})

    assert api.delete(f"/c/bank/TEST_BANK/content/{cid}").json() == {"deleted": 1}
    assert api.delete(f"/c/bank/TEST_BANK/content/{cid}").json() == {"deleted": 0}
    assert api.delete("/c/bank/TEST_BANK").json() == {"message": "Done"}
    assert api.get("/c/banks").json() == []


def test_hash_upload_lookup_upload_and_content(api: TestClient) -> None:
    photo = {"photo": ("r.jpg", ROCKET, "image/jpeg")}
    assert api.post("/h/hash", files=photo).json() == {"pdq": PDQ}  # HMA's, no bank yet
    every = api.post("/h/hash", files=photo, params={"types": "pdq,md5,phash"}).json()
    assert every["pdq"] == PDQ and len(every["md5"]) == 32 and set(every) == {"pdq", "md5", "phash"}
    api.post("/c/banks", json={"name": "PHOTOS"})
    added = api.post("/c/bank/PHOTOS/content", files={"photo": ("r.jpg", ROCKET, "image/jpeg")})
    assert added.status_code == 200 and added.json()["signals"]["pdq"] == PDQ
    assert set(api.post("/h/hash", files=photo).json()) == {"pdq", "md5", "sha256"}  # banked
    copy = encode(sample("rocket"), quality=60)
    found = api.post("/m/lookup", files={"photo": ("c.jpg", copy, "image/jpeg")}).json()
    assert list(found["pdq"]) == ["PHOTOS"]
    flat = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(flat, "PNG")
    assert api.post("/h/hash", files={"photo": ("f.png", flat.getvalue())}).json()["pdq"] == ""
    assert api.post("/h/hash", files={"file": ("x", b"x")}).json() == {
        "message": "no such content_type: 'file'"
    }
    assert api.post("/h/hash", json={}).json() == {
        "message": "Missing multipart/form-data file upload"
    }
    two = api.post("/h/hash", files=[("photo", ("a", ROCKET)), ("photo", ("b", ROCKET))])
    assert two.json() == {"message": "Only one file allowed per request"}
    assert api.post("/m/compare", json={"pdq": [PDQ, PDQ]}).json() == {
        "pdq": [True, {"distance": 0}]
    }
    assert "/m/lookup" in api.get("/site-map").json()
    assert api.get("/openapi.json").json()["paths"]["/c/banks"]


def test_api_keys_roles_rotation_and_rate_limits(tmp_path, monkeypatch) -> None:
    from modstream.serve.access import Gate, KeyRing, RateLimit, key_record

    keys = tmp_path / "keys.jsonl"
    keys.write_bytes(key_record("coop", "k-lookup", ["lookup"], []) + b"\n")
    controls = BankControls()
    bank = Bank(controls=controls)

    async def nothing(*args):
        raise AssertionError("not called")

    backend = Backend(bank, controls, AppliedAtOnce(bank, controls), nothing, nothing)
    gate = Gate(KeyRing(keys), RateLimit(rate=1.0, burst=3))
    api = TestClient(build_api(backend, gate), base_url="http://localhost")
    lookup = {"signal_type": "pdq", "signal": PDQ}
    assert api.get("/m/lookup", params=lookup).status_code == 401
    assert api.get("/m/lookup", params=lookup, headers={"X-API-Key": "nope"}).json() == {
        "message": "unknown API key"
    }
    bearer = {"Authorization": "Bearer k-lookup"}
    assert api.get("/m/lookup", params=lookup, headers=bearer).json() == {}
    assert api.get("/c/banks", headers=bearer).json() == {
        "message": "this API key lacks the role 'bank_admin'"
    }
    assert api.get("/status").status_code == 200  # health needs no key
    limited = [api.get("/m/lookup", params=lookup, headers=bearer) for _ in range(3)]
    assert limited[-1].status_code == 429 and int(limited[-1].headers["Retry-After"]) >= 1

    # Rotation: the file changes, the old key stops working, no restart (the file is re-read
    # at most once a second; the rate limit still holds while the new key waits).
    keys.write_bytes(key_record("coop", "k-new", ["lookup", "shared_bank_admin"], []) + b"\n")
    wait_until(
        lambda: api.get("/c/banks", headers={"X-API-Key": "k-lookup"}).status_code == 401,
        timeout=30,
        what="the old key refused",
    )

    def past_the_rate_limit():
        answer = api.get("/c/banks", headers={"X-API-Key": "k-new"})
        return None if answer.status_code == 429 else answer

    assert wait_until(past_the_rate_limit, timeout=30).json() == []
    assert b"k-new" not in keys.read_bytes()  # only its hash is kept
    metrics = api.get("/metrics").text
    assert 'modstream_http_requests_total{route="/m/lookup",status="429"}' in metrics


def test_serve_refuses_a_public_address_without_keys() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "modstream.cli", "serve", "--host", "0.0.0.0", "--port", "5199"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "without API keys" in done.stderr


def test_v1_keys_act_only_for_their_platforms(tmp_path) -> None:
    from modstream.serve.access import Gate, KeyRing, RateLimit, key_record
    from modstream.serve.v1 import RecentDecisions

    keys = tmp_path / "keys.jsonl"
    keys.write_bytes(key_record("forum", "k-forum", ["submit"], ["forum"]) + b"\n")
    sent, media = [], []

    class Recorder:
        async def upload(self, event, raw) -> None:
            sent.append(event.event_id)
            media.extend(event.media)

        async def review_outcome(self, outcome, raw) -> None:
            sent.append(outcome.decision_id)

    controls = BankControls()
    bank = Bank(controls=controls)
    backend = Backend(bank, controls, AppliedAtOnce(bank, controls), None, None)  # type: ignore[arg-type]
    gate = Gate(KeyRing(keys), RateLimit(rate=100.0, burst=100))
    api = TestClient(
        build_api(backend, gate, v1=(Recorder(), RecentDecisions())), base_url="http://localhost"
    )
    event = {"schema": 1, "event_id": "e1", "platform": "forum", "content_id": "c1",
             "uploader_id": "u1", "created_at": "2026-11-30T00:00Z", "text": "hi"}  # fmt: skip
    key = {"X-API-Key": "k-forum"}
    assert api.post("/v1/uploads", json=event, headers=key).status_code == 202
    other = api.post("/v1/uploads", json={**event, "platform": "video-site"}, headers=key)
    assert other.json() == {"message": "this API key does not hold platform 'video-site'"}
    assert api.post("/v1/uploads", json=event).status_code == 401
    # Multipart: the event, and the media as files named by their kind, carried inline.
    form = {"event": orjson.dumps({**event, "event_id": "e2", "text": None}).decode()}
    files = [("image", ("front.jpg", ROCKET, "image/jpeg")), ("photo", ("back.jpg", ROCKET))]
    assert api.post("/v1/uploads", data=form, files=files, headers=key).status_code == 202
    assert sent == ["e1", "e2"] and [m.media_id for m in media] == ["front.jpg", "back.jpg"]
    big = [("video", ("big.mp4", b"\0" * 800_000, "video/mp4"))]
    too_big = api.post("/v1/uploads", data=form, files=big, headers=key)
    assert too_big.status_code == 413 and "by url or path" in too_big.json()["message"]
    assert api.post("/v1/uploads", files=big, headers=key).json() == {
        "message": "multipart upload without its `event` field (the UploadEvent JSON)"
    }


def test_exchanges_as_hma_answers_without_taking_secrets(tmp_path) -> None:
    controls = BankControls()
    bank = Bank(controls=controls)
    publisher = AppliedAtOnce(bank, controls)
    backend = Backend(bank, controls, publisher, None, None)  # type: ignore[arg-type]
    admin = ExchangeAdmin(backend, publisher.exchanges, tmp_path)
    api = TestClient(build_api(backend, exchanges=admin), base_url="http://localhost")

    assert api.get("/c/exchanges/apis").json() == [
        "fb_threatexchange", "tat", "ncmec", "stop_ncii", "local_file", "sample"
    ]  # fmt: skip
    assert api.get("/c/exchanges/api/fb_threatexchange").json() == {
        "supports_authentification": True, "has_set_authentification": False
    }  # fmt: skip
    assert api.get("/c/exchanges/api/nope").json() == {"message": "no such Exchange API 'nope'"}
    secret = api.post("/c/exchanges/api/fb_threatexchange",
                      json={"credential_json": {"api_token": "s3cr3t|token"}})  # fmt: skip
    assert secret.status_code == 400 and "s3cr3t" not in secret.text
    assert "never sent over HTTP" in secret.json()["message"]
    set_ = api.post("/c/exchanges/api/fb_threatexchange",
                    json={"credential_json": {"env": "EXCHANGE_CREDENTIALS_TX"}})  # fmt: skip
    assert set_.json()["has_set_authentification"] is True
    schema = api.get("/c/exchanges/api/ncmec/schema").json()
    environment = schema["config_schema"]["fields"][0]
    assert environment["name"] == "environment" and environment["type"] == "enum"
    assert [f["name"] for f in schema["credentials_schema"]["fields"]] == ["file", "env"]

    created = api.post("/c/exchanges", json={"bank": "TX_GROUP", "api": "fb_threatexchange",
                                              "api_json": {"privacy_group": 1234}})  # fmt: skip
    assert (created.status_code, created.json()) == (201, {"message": "Created successfully"})
    assert api.post("/c/exchanges", json={"bank": "TX_GROUP", "api": "sample"}).json() == {
        "message": "Exchange already exists"
    }
    assert api.get("/c/exchanges").json() == ["TX_GROUP"]
    assert api.get("/c/bank/TX_GROUP").json() == {"matching_enabled_ratio": 1.0, "name": "TX_GROUP"}
    shown = api.get("/c/exchange/TX_GROUP").json()
    assert shown["privacy_group"] == 1234 and shown["api"] == "fb_threatexchange"
    assert shown["enabled"] is True and shown["bank"] == "TX_GROUP"
    assert publisher.exchanges.configs["TX_GROUP"].credentials == {"env": "EXCHANGE_CREDENTIALS_TX"}
    assert api.post("/c/exchanges", json={"bank": "lower", "api": "sample"}).status_code == 400
    assert api.post("/c/exchanges", json={"bank": "X", "api": "nope"}).json() == {
        "message": "No such exchange type 'nope'"
    }
    missing = api.post("/c/exchanges", json={"bank": "NCMEC", "api": "ncmec", "api_json": {}})
    assert missing.status_code == 400 and "environment" in missing.json()["message"]

    # Where credentials go and which file is read are an operator's choice, not an API key's.
    def create(bank: str, api_name: str, **api_json: str) -> int:
        body = {"bank": bank, "api": api_name, "api_json": api_json}
        return api.post("/c/exchanges", json=body).status_code

    assert create("TAT", "tat", base_url="https://evil.example") == 403
    assert create("FILE", "local_file", filename="../../etc/passwd") == 403
    assert create("FILE", "local_file", filename="partner.txt") == 201
    assert api.get("/c/exchange/FILE").json()["filename"] == str(tmp_path / "partner.txt")

    assert api.get("/c/exchange/TX_GROUP/status").json()["last_fetch_succeeded"] is None
    state = ExchangeState(api="fb_threatexchange", progress_at=1700000000.5,
                          last_attempt_at=1700000100.0, last_success_at=1700000160.0,
                          fetched=42, published=40)  # fmt: skip
    publisher.exchanges.state_table.apply("exchange/TX_GROUP", orjson.dumps(state))
    status = api.get("/c/exchange/TX_GROUP/status").json()
    assert status["last_fetch_succeeded"] is True and status["up_to_date"] is True
    assert (status["fetched_items"], status["checkpoint_ts"]) == (42, 1700000000)
    assert (status["last_fetch_time"], status["success"]) == (1700000100, True)
    # A fetch ends when it succeeds, not when it began; the next one running keeps that.
    assert status["last_fetch_complete_ts"] == 1700000160
    running = dataclasses.replace(state, last_attempt_at=1700000900.0, syncing=True)
    publisher.exchanges.state_table.apply("exchange/TX_GROUP", orjson.dumps(running))
    status = api.get("/c/exchange/TX_GROUP/status").json()
    assert (status["running_fetch_start_ts"], status["last_fetch_complete_ts"]) == (
        1700000900,
        1700000160,
    )
    failed = dataclasses.replace(running, syncing=False, error="HTTP 500", failures=1)
    publisher.exchanges.state_table.apply("exchange/TX_GROUP", orjson.dumps(failed))
    status = api.get("/c/exchange/TX_GROUP/status").json()
    assert (status["last_fetch_succeeded"], status["last_fetch_complete_ts"]) == (False, 1700000900)

    disabled = api.put("/c/exchange/TX_GROUP", json={"enabled": False}).json()
    assert disabled["enabled"] is False and not publisher.exchanges.configs["TX_GROUP"].enabled
    assert api.delete("/c/exchange/TX_GROUP").json() == {"message": "Exchange deleted"}
    assert api.get("/c/exchange/TX_GROUP").status_code == 404
    assert "TX_GROUP" in api.get("/c/banks").text  # the bank stays, as its entries do
