"""The HTTP API as a real ``modstream serve`` process on a real broker, driven over real HTTP:
HMA's endpoints as HMA answers them (docs/http-api.md), the way ROOST's Coop drives HMA, and
banks changed through the API acting on the pipeline's workers."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request

import aiohttp
import pytest
from aiohttp import web
from conftest import start_server
from streaming import collect, http_server, inline, send, upload
from test_review_kafka import PDQ, ROCKET

from modstream.demo import encode, sample

pytestmark = pytest.mark.kafka

COPY = encode(sample("rocket"), quality=60)  # the same picture in another file


@pytest.fixture
def server(workers, tmp_path):
    files = tmp_path / "exchange-files"
    files.mkdir()
    url, proc = start_server(workers, tmp_path, MODSTREAM_API_EXCHANGE_FILES_DIR=str(files))
    yield url
    proc.terminate()
    proc.wait(timeout=20)


async def call(session, method, url, **kwargs) -> tuple[int, object]:
    async with session.request(method, url, **kwargs) as answer:
        body = await answer.read()
        kind = answer.headers.get("content-type", "")
        return answer.status, (await answer.json()) if "json" in kind else body.decode()


def photo(data: bytes, field: str = "photo") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field(field, data, filename="upload.jpg", content_type="image/jpeg")
    return form


async def test_hma_endpoints_answer_as_hma_does(server):
    async with aiohttp.ClientSession(server) as s:
        assert await call(s, "GET", "/status") == (200, "I-AM-ALIVE")
        assert await call(s, "GET", "/status/live") == (200, "I-AM-ALIVE")
        status, routes = await call(s, "GET", "/site-map")
        assert status == 200 and {"/m/lookup", "/c/banks", "/h/hash"} <= set(routes)
        # banks
        assert await call(s, "POST", "/c/banks", json={"name": "TEST_BANK"}) == (
            201, {"matching_enabled_ratio": 1.0, "name": "TEST_BANK"})  # fmt: skip
        assert await call(s, "POST", "/c/banks", json={"name": "TEST_BANK"}) == (
            403, {"message": "Bank already exists"})  # fmt: skip
        assert await call(s, "POST", "/c/banks", json={"name": "not_upper"}) == (
            400, {"message": "Bank names must be UPPER_WITH_UNDERSCORE"})  # fmt: skip
        status, errors = await call(s, "POST", "/c/banks", json={})
        assert status == 422 and errors[0]["loc"] == ["body", "name"]
        assert await call(s, "GET", "/c/bank/TEST_BANK") == (
            200, {"matching_enabled_ratio": 1.0, "name": "TEST_BANK"})  # fmt: skip
        assert await call(s, "GET", "/c/bank/NO_SUCH_BANK") == (
            404, {"message": "bank 'NO_SUCH_BANK' not found"})  # fmt: skip
        status, banks = await call(s, "GET", "/c/banks")
        assert {"matching_enabled_ratio": 1.0, "name": "TEST_BANK"} in banks
        # signals and lookups
        status, added = await call(s, "POST", "/c/bank/TEST_BANK/signal", json={"pdq": PDQ})
        assert status == 200 and added["signals"] == {"pdq": PDQ}
        cid = added["id"]
        lookup = {"signal_type": "pdq", "signal": PDQ}
        assert await call(s, "GET", "/m/lookup", params=lookup) == (
            200, {"TEST_BANK": [{"bank_content_id": cid, "distance": "0"}]})  # fmt: skip
        assert await call(s, "GET", "/m/raw_lookup", params=lookup) == (200, {"matches": [cid]})
        distances = {**lookup, "include_distance": "true"}
        assert await call(s, "GET", "/m/raw_lookup", params=distances) == (
            200, {"matches": [{"bank_content_id": cid, "distance": "0"}]})  # fmt: skip
        assert await call(s, "GET", "/m/lookup", params={**lookup, "signal": PDQ.upper()}) == (
            400, {"message": "invalid signal: invalid PDQ hash"})  # fmt: skip
        assert await call(s, "GET", "/m/lookup", params={"signal_type": "nope", "signal": "x"}) == (
            400, {"message": "No such SignalType 'nope'"})  # fmt: skip
        assert await call(s, "GET", "/m/lookup") == (
            400, {"message": "Either url or both signal and signal_type are required"})  # fmt: skip
        assert await call(s, "POST", "/c/bank/TEST_BANK/signal", json={}) == (
            400, {"message": "No signals given"})  # fmt: skip
        assert await call(s, "POST", "/c/bank/TEST_BANK/signal", json={"pdq": "abc"}) == (
            400, {"message": "Invalid pdq signal: invalid pdq hash"})  # fmt: skip
        assert await call(s, "POST", "/m/compare", json={"pdq": [PDQ, PDQ]}) == (
            200, {"pdq": [True, {"distance": 0}]})  # fmt: skip
        status, index = await call(s, "GET", "/m/index/status")
        assert status == 200 and index["pdq"]["present"] and index["pdq"]["size"] >= 1
        # hashing and matching uploads
        status, hashed = await call(s, "POST", "/h/hash", data=photo(ROCKET))
        assert status == 200 and hashed["pdq"] == PDQ
        assert await call(s, "POST", "/h/hash", data=photo(ROCKET, "file")) == (
            400, {"message": "no such content_type: 'file'"})  # fmt: skip
        assert await call(s, "POST", "/h/hash", json={}) == (
            400, {"message": "Missing multipart/form-data file upload"})  # fmt: skip
        status, found = await call(s, "POST", "/m/lookup", data=photo(COPY))
        assert status == 200 and list(found["pdq"]) == ["TEST_BANK"]
        # content: show, disable, enable, delete
        status, shown = await call(s, "GET", f"/c/bank/TEST_BANK/content/{cid}",
                                   params={"include_signals": "true"})  # fmt: skip
        assert status == 200 and shown["id"] == cid and shown["signals"] == {"pdq": PDQ}
        assert shown["bank"] == {"matching_enabled_ratio": 1.0, "name": "TEST_BANK"}
        assert (await call(s, "GET", "/c/bank/TEST_BANK/content/999999"))[0] == 404
        disable = {"disable_until_ts": int(time.time()) + 3600}
        status, updated = await call(s, "PUT", f"/c/bank/TEST_BANK/content/{cid}", json=disable)
        assert status == 200 and updated["disable_until_ts"] == disable["disable_until_ts"]
        assert await call(s, "GET", "/m/lookup", params=lookup) == (200, {})  # at once
        await call(s, "PUT", f"/c/bank/TEST_BANK/content/{cid}", json={"disable_until_ts": 1})
        assert (await call(s, "GET", "/m/lookup", params=lookup))[1]
        # the enabled ratio: 0 never matches, unless POST asks to bypass the coin flip
        await call(s, "PUT", "/c/bank/TEST_BANK", json={"enabled_ratio": 0.0})
        assert await call(s, "GET", "/m/lookup", params=lookup) == (200, {})
        status, bypassed = await call(s, "POST", "/m/lookup", data=photo(ROCKET),
                                      params={"bypass_coinflip": "true"})  # fmt: skip
        assert list(bypassed["pdq"]) == ["TEST_BANK"]
        await call(s, "PUT", "/c/bank/TEST_BANK", json={"enabled": True})
        assert await call(s, "DELETE", f"/c/bank/TEST_BANK/content/{cid}") == (200, {"deleted": 1})
        assert await call(s, "DELETE", f"/c/bank/TEST_BANK/content/{cid}") == (200, {"deleted": 0})
        assert await call(s, "GET", "/m/lookup", params=lookup) == (200, {})
        assert await call(s, "DELETE", "/c/bank/TEST_BANK") == (200, {"message": "Done"})
        assert await call(s, "DELETE", "/c/bank/TEST_BANK") == (200, {"message": "Done"})
        assert (await call(s, "GET", "/c/bank/TEST_BANK"))[0] == 404
        status, types = await call(s, "GET", "/c/signal_type")
        assert {"name": "pdq", "enabled_ratio": 1.0} in types
        status, document = await call(s, "GET", "/openapi.json")
        assert status == 200 and "/c/bank/{bank_name}/content" in document["paths"]


async def test_coop_flow_by_url_and_signal_and_the_workers_act_on_it(server, workers):
    """What Coop's HMA client does: create a bank, add content by URL and by signal, look
    up, delete; and a bank changed through the API acts in the pipeline at once."""

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=ROCKET, content_type="image/jpeg")

    async with http_server({"/rocket.jpg": image}) as media, aiohttp.ClientSession(server) as s:
        await call(s, "POST", "/c/banks", json={"name": "COOP_BANK"})
        status, by_url = await call(s, "POST", "/c/bank/COOP_BANK/content",
                                    params={"url": f"{media}/rocket.jpg"})  # fmt: skip
        assert status == 200 and by_url["signals"]["pdq"] == PDQ
        status, hashed = await call(s, "GET", "/h/hash", params={"url": f"{media}/rocket.jpg"})
        assert hashed["pdq"] == PDQ
        status, looked = await call(s, "GET", "/m/lookup", params={"url": f"{media}/rocket.jpg"})
        assert looked["pdq"]["COOP_BANK"][0]["bank_content_id"] == by_url["id"]
        refused = await call(s, "GET", "/h/hash", params={"url": "http://169.254.169.254/x"})
        assert refused[0] == 400 and "Failed to fetch URL" in refused[1]["message"]

        workers.start()  # a worker decides an upload of the photo the API banked
        await send(workers, "uploads", [upload("coop-1", media=inline(COPY))])
        decision = (await collect(workers, "decisions", {"coop-1"}))["coop-1"][0]
        assert decision["verdict"] == "takedown", decision
        assert any(e.get("bank") == "COOP_BANK" for e in decision["evidence"])

        assert await call(s, "DELETE", f"/c/bank/COOP_BANK/content/{by_url['id']}") == (
            200, {"deleted": 1})  # fmt: skip
        assert await call(s, "GET", "/m/lookup", params={"signal_type": "pdq", "signal": PDQ}) == (
            200, {})  # fmt: skip


async def test_v1_uploads_in_decisions_out_and_review_outcomes(server, workers):
    """modstream's own endpoints: an upload answered with its decision (?wait), the decision
    read back, a bad event refused naming the field, a reviewer's outcome published."""
    workers.start()
    async with aiohttp.ClientSession(server) as s:
        await call(s, "POST", "/c/banks", json={"name": "V1_BANK"})
        await call(s, "POST", "/c/bank/V1_BANK/signal", json={"pdq": PDQ})
        _, event = upload("v1-1", media=inline(COPY))
        status, decision = await call(s, "POST", "/v1/uploads", data=event,
                                      params={"wait": "20"},
                                      headers={"content-type": "application/json"})  # fmt: skip
        assert status == 200 and decision["verdict"] == "takedown", decision
        assert await call(s, "GET", "/v1/decisions/test/v1-1") == (200, decision)
        assert (await call(s, "GET", "/v1/decisions/test/never"))[0] == 404
        _, quick = upload("v1-2", text="a post about the weather")
        status, accepted = await call(s, "POST", "/v1/uploads", data=quick,
                                      headers={"content-type": "application/json"})  # fmt: skip
        assert (status, accepted["status"]) == (202, "accepted")
        bad = {"schema": 1, "event_id": "v1-3", "platform": "test", "content_id": "c",
               "uploader_id": "u", "created_at": "2026-11-30T00:00:00Z", "media": "no"}  # fmt: skip
        status, refused = await call(s, "POST", "/v1/uploads", json=bad)
        assert status == 400 and "upload.media" in refused["message"]
        outcome = {"schema": 1, **{k: decision[k] for k in
                   ("decision_id", "event_id", "platform", "content_id")},
                   "outcome": "overturn", "reviewer": "r1",
                   "decided_at": "2026-11-30T09:00:00Z"}  # fmt: skip
        status, taken = await call(s, "POST", "/v1/review-outcomes", json=outcome)
        assert (status, taken["status"]) == (202, "accepted")
        human = (await collect(workers, "reinstatements", {"v1-1"}))["v1-1"][0]
        assert human["source"] == "human" and human["supersedes"] == decision["decision_id"]


async def test_exchanges_created_through_the_api_are_synced_into_banks(
    server, workers, sync_services, tmp_path
):
    """Coop's exchange calls: the APIs and their credential state, an exchange and its bank
    created in one call, the sync service fetching it, its status, disable and delete."""
    (tmp_path / "exchange-files" / "partner.txt").write_text(f"pdq {PDQ}\n")
    async with aiohttp.ClientSession(server) as s:
        status, apis = await call(s, "GET", "/c/exchanges/apis")
        assert status == 200 and {"fb_threatexchange", "ncmec", "local_file"} <= set(apis)
        auth = ("supports_authentification", "has_set_authentification")
        status, local = await call(s, "GET", "/c/exchanges/api/local_file")
        assert (status, local) == (200, dict.fromkeys(auth, False))
        reference = {"credential_json": {"env": "EXCHANGE_CREDENTIALS_NCMEC"}}
        status, ncmec = await call(s, "POST", "/c/exchanges/api/ncmec", json=reference)
        assert (status, ncmec) == (200, dict.fromkeys(auth, True))
        secret = {"credential_json": {"user": "u", "password": "p"}}
        status, refused = await call(s, "POST", "/c/exchanges/api/ncmec", json=secret)
        assert status == 400 and "never sent over HTTP" in refused["message"]
        created = {"bank": "PARTNER", "api": "local_file", "api_json": {"filename": "partner.txt"}}
        assert await call(s, "POST", "/c/exchanges", json=created) == (
            201, {"message": "Created successfully"})  # fmt: skip
        assert await call(s, "GET", "/c/exchanges") == (200, ["PARTNER"])
        status, shown = await call(s, "GET", "/c/exchange/PARTNER")
        assert shown["api"] == "local_file" and shown["enabled"] is True
        assert shown["filename"] == str(tmp_path / "exchange-files" / "partner.txt")
        status, before = await call(s, "GET", "/c/exchange/PARTNER/status")
        assert before["last_fetch_succeeded"] is None and before["fetched_items"] == 0

        sync_services.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, fetched = await call(s, "GET", "/c/exchange/PARTNER/status")
            if fetched["last_fetch_succeeded"]:
                break
            await asyncio.sleep(0.5)
        assert fetched["last_fetch_succeeded"] and fetched["up_to_date"], fetched
        assert fetched["fetched_items"] == 1 and fetched["published"] == 1
        lookup = {"signal_type": "pdq", "signal": PDQ}
        while time.monotonic() < deadline:
            status, found = await call(s, "GET", "/m/lookup", params=lookup)
            if found:
                break
            await asyncio.sleep(0.3)
        assert list(found) == ["PARTNER"] and found["PARTNER"][0]["distance"] == "0"

        status, disabled = await call(s, "PUT", "/c/exchange/PARTNER", json={"enabled": False})
        assert status == 200 and disabled["enabled"] is False
        assert await call(s, "DELETE", "/c/exchange/PARTNER") == (
            200, {"message": "Exchange deleted"})  # fmt: skip
        assert (await call(s, "GET", "/c/exchange/PARTNER"))[0] == 404
        assert (await call(s, "GET", "/m/lookup", params=lookup))[1]  # the bank stays


def test_https_with_a_certificate_and_keys(workers, tmp_path):
    """Given a certificate the server speaks only TLS; keys travel inside it."""
    import ssl

    from modstream.localkafka import DEPLOY_DIR
    from modstream.serve.access import key_record

    certs = tmp_path / "certs"
    subprocess.run([str(DEPLOY_DIR / "make-certs.sh"), str(certs)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    keys = tmp_path / "keys.jsonl"
    keys.write_bytes(key_record("coop", "k-admin", ["shared_bank_admin"], []) + b"\n")
    trust = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    url, proc = start_server(
        workers, tmp_path, trust,
        MODSTREAM_API_TLS_CERTFILE=str(certs / "broker.pem"),
        MODSTREAM_API_TLS_KEYFILE=str(certs / "broker.key"),
        MODSTREAM_API_KEYS_FILE=str(keys),
    )  # fmt: skip
    try:
        request = urllib.request.Request(f"{url}/c/banks", headers={"X-API-Key": "k-admin"})
        with urllib.request.urlopen(request, timeout=10, context=trust) as answer:
            assert answer.status == 200 and answer.read() == b"[]"
        with pytest.raises(OSError):  # plain HTTP on the same port gets no answer
            urllib.request.urlopen(url.replace("https", "http") + "/status", timeout=5)
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):  # nor an untrusting one
            urllib.request.urlopen(f"{url}/status", timeout=5, context=ssl.create_default_context())
    finally:
        proc.terminate()
        proc.wait(timeout=20)
