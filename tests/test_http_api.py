"""The HTTP API in memory (the bank, its controls and a publisher that applies at once): the
HMA endpoints' shapes and errors, in milliseconds. The same requests against a real server on
a real broker: tests/test_http_api_kafka.py."""

from __future__ import annotations

import asyncio
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from modstream.bank.bank import Bank
from modstream.bank.controls import BankControls
from modstream.contracts import BANK_CONFIG_TOPIC, BankEntry
from modstream.demo import encode, sample
from modstream.engine import hash_media
from modstream.serve.app import build_api
from modstream.serve.backend import Backend

ROCKET = encode(sample("rocket"), quality=90)
PDQ = hash_media("m", "image", ROCKET, 10**8).signals["pdq"]["value"]


class AppliedAtOnce:
    """A publisher that applies to the bank and its controls directly."""

    def __init__(self, bank: Bank, controls: BankControls) -> None:
        self.bank, self.controls = bank, controls

    async def publish(self, topic, records) -> None:
        for key, value in records:
            if topic == BANK_CONFIG_TOPIC:
                self.controls.apply(key.decode(), value)
            else:
                self.bank.apply(key.decode(), None if value is None else BankEntry.parse(value))


@pytest.fixture
def api() -> TestClient:
    controls = BankControls()
    bank = Bank(controls=controls)

    async def hasher(kind: str, data: bytes):
        return await asyncio.to_thread(hash_media, "m", kind, data, 10**8)

    async def fetch(url: str) -> bytes:
        raise AssertionError("no fetching in memory")

    backend = Backend(bank, controls, AppliedAtOnce(bank, controls), hasher, fetch)
    return TestClient(build_api(backend))


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
    hashed = api.post("/h/hash", files={"photo": ("r.jpg", ROCKET, "image/jpeg")}).json()
    assert hashed["pdq"] == PDQ and len(hashed["md5"]) == 32
    api.post("/c/banks", json={"name": "PHOTOS"})
    added = api.post("/c/bank/PHOTOS/content", files={"photo": ("r.jpg", ROCKET, "image/jpeg")})
    assert added.status_code == 200 and added.json()["signals"]["pdq"] == PDQ
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
    import time

    from modstream.serve.access import Gate, KeyRing, RateLimit, key_record

    keys = tmp_path / "keys.jsonl"
    keys.write_bytes(key_record("coop", "k-lookup", ["lookup"], []) + b"\n")
    controls = BankControls()
    bank = Bank(controls=controls)

    async def nothing(*args):
        raise AssertionError("not called")

    backend = Backend(bank, controls, AppliedAtOnce(bank, controls), nothing, nothing)
    gate = Gate(KeyRing(keys), RateLimit(rate=1.0, burst=3))
    api = TestClient(build_api(backend, gate))
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

    time.sleep(1.1)  # rotation: the file changes, the old key stops working, no restart
    keys.write_bytes(key_record("coop", "k-new", ["lookup", "bank_admin"], []) + b"\n")
    time.sleep(1.1)
    assert api.get("/c/banks", headers={"X-API-Key": "k-lookup"}).status_code == 401
    assert api.get("/c/banks", headers={"X-API-Key": "k-new"}).json() == []
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
    sent = []

    class Recorder:
        async def upload(self, event, raw) -> None:
            sent.append(event.event_id)

        async def review_outcome(self, outcome, raw) -> None:
            sent.append(outcome.decision_id)

    controls = BankControls()
    bank = Bank(controls=controls)
    backend = Backend(bank, controls, AppliedAtOnce(bank, controls), None, None)  # type: ignore[arg-type]
    gate = Gate(KeyRing(keys), RateLimit(rate=100.0, burst=100))
    api = TestClient(build_api(backend, gate, v1=(Recorder(), RecentDecisions())))
    event = {"schema": 1, "event_id": "e1", "platform": "forum", "content_id": "c1",
             "uploader_id": "u1", "created_at": "2026-11-30T00:00Z", "text": "hi"}  # fmt: skip
    key = {"X-API-Key": "k-forum"}
    assert api.post("/v1/uploads", json=event, headers=key).status_code == 202
    other = api.post("/v1/uploads", json={**event, "platform": "video-site"}, headers=key)
    assert other.json() == {"message": "this API key does not hold platform 'video-site'"}
    assert api.post("/v1/uploads", json=event).status_code == 401
    assert sent == ["e1"]
