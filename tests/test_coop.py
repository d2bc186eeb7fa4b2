"""Issue 25: what broke a ROOST Coop deployment against modstream, in memory (a real server
on the broker: tests/test_coop_kafka.py). Coop's calls are those of tests/coop_client.py."""

from __future__ import annotations

import orjson
from fastapi.testclient import TestClient
from test_http_api import PDQ, ROCKET, AppliedAtOnce, memory_backend

from modstream.bank.bank import Bank
from modstream.bank.controls import BankControls
from modstream.cli import main
from modstream.serve.access import Gate, KeyRing, RateLimit, key_record
from modstream.serve.app import build_api
from modstream.serve.backend import Backend
from modstream.serve.sites import SitePolicy
from modstream.settings import Settings

LOCAL = "http://localhost"
PROXIED = "http://modstream.internal:5100"
PHOTO = {"photo": ("r.jpg", ROCKET, "image/jpeg")}
LOOKUP = {"signal_type": "pdq", "signal": PDQ}


def server_gate(keys: KeyRing | None, settings: Settings | None = None) -> Gate:
    """The gate ``modstream serve`` builds from its settings (defaults unless given)."""
    s = settings or Settings()
    return Gate(
        keys,
        RateLimit(s.api_rate_per_s, s.api_burst),
        RateLimit(s.api_prekey_rate_per_s, s.api_prekey_burst),
    )


def plain_backend(ready=lambda: True, **options) -> Backend:
    controls = BankControls()
    bank = Bank(controls=controls)
    return Backend(bank, controls, AppliedAtOnce(bank, controls), None, None, ready, **options)  # type: ignore[arg-type]


# ---- 2: a trailing slash in HMA_SERVICE_URL --------------------------------------------


def test_repeated_slashes_answer_as_the_single_slash_path() -> None:
    api = TestClient(build_api(plain_backend()), base_url=LOCAL)
    assert (
        api.post(f"{LOCAL}//c/banks", json={"name": "COOP", "enabled_ratio": "1.0"}).status_code
        == 201
    )
    assert api.get(f"{LOCAL}//c/bank/COOP").json() == api.get("/c/bank/COOP").json()
    assert api.get(f"{LOCAL}//c/bank/COOP").status_code == 200
    assert api.get(f"{LOCAL}///m//lookup", params=LOOKUP).status_code == 200
    assert api.get(f"{LOCAL}//status").text == "I-AM-ALIVE"
    metrics = api.get("/metrics").text  # counted under the route it was served by
    assert 'route="/c/bank/{bank_name}",status="200"' in metrics
    assert 'route="unmatched"' not in metrics


def test_repeated_slashes_still_need_the_roles_of_the_path_they_reach(tmp_path) -> None:
    keys = tmp_path / "keys.jsonl"
    keys.write_bytes(key_record("coop", "k-lookup", ["lookup"], []) + b"\n")
    api = TestClient(build_api(plain_backend(), server_gate(KeyRing(keys))), base_url=LOCAL)
    lookup_key = {"X-API-Key": "k-lookup"}
    for path in ("//c/banks", "/m/..//c/banks", "//c//banks"):
        answer = api.get(LOCAL + path, headers=lookup_key)
        assert answer.status_code in (403, 404), path  # never the bank list
        assert answer.status_code != 200
    assert api.get(f"{LOCAL}//c/banks", headers=lookup_key).json() == {
        "message": "this API key lacks the role 'bank_admin'"
    }
    assert api.get(f"{LOCAL}//c/banks").status_code == 401
    assert api.get(f"{LOCAL}//m/lookup", params=LOOKUP, headers=lookup_key).status_code == 200


# ---- 3: lookups while the index loads ----------------------------------------------------


def test_routes_that_read_the_bank_answer_503_while_it_loads() -> None:
    loaded = False
    api = TestClient(build_api(memory_backend(ready=lambda: loaded)), base_url=LOCAL)
    refused = [
        api.get("/m/lookup", params=LOOKUP),
        api.post("/m/lookup", files=PHOTO),
        api.get("/m/raw_lookup", params=LOOKUP),
        api.get("/c/banks"),
        api.get("/c/bank/COOP"),  # a 404 here would make Coop drop its bank
        api.get(f"{LOCAL}//c/bank/COOP"),
        api.post("/c/banks", json={"name": "COOP"}),
        api.put("/c/bank/COOP", json={"enabled_ratio": 0.5}),
        api.delete("/c/bank/COOP"),
        api.post("/c/bank/COOP/content", files=PHOTO),
    ]
    for answer in refused:
        assert answer.status_code == 503, answer.request.url
        assert answer.json()["message"].startswith("index not yet ready")
        assert int(answer.headers["Retry-After"]) >= 1
    assert api.get("/status").status_code == 503
    assert int(api.get("/status").headers["Retry-After"]) >= 1
    assert int(api.get("/ready").headers["Retry-After"]) >= 1
    for path in ("/status/live", "/live", "/m/index/status", "/c/signal_type", "/c/content_type"):
        assert api.get(path).status_code == 200, path
    assert api.post("/h/hash", files=PHOTO).json() == {"pdq": PDQ}
    assert api.post("/m/compare", json={"pdq": [PDQ, PDQ]}).status_code == 200

    loaded = True
    assert api.post("/c/banks", json={"name": "COOP"}).status_code == 201
    api.post("/c/bank/COOP/content", files=PHOTO)
    assert list(api.get("/m/lookup", params=LOOKUP).json()) == ["COOP"]


# ---- 1: rate limits and the signal types of /h/hash -------------------------------------


def test_a_trusted_key_has_the_high_default_and_wrong_keys_the_low_one(tmp_path) -> None:
    keys = tmp_path / "keys.jsonl"
    keys.write_bytes(
        key_record("coop", "k-coop", ["lookup"], [])
        + b"\n"
        + key_record("small", "k-small", ["lookup"], [], rate_per_s=0.01, burst=3)
        + b"\n"
    )
    assert Settings().api_burst >= 1000 and Settings().api_prekey_burst <= 100
    settings = Settings(api_prekey_rate_per_s=0.01, api_prekey_burst=5)  # (time-proof)
    api = TestClient(
        build_api(plain_backend(), server_gate(KeyRing(keys), settings)), base_url=LOCAL
    )
    coop = {"X-API-Key": "k-coop"}
    # One Coop batch of 40 items: 40 getBank, 40 hashes, 40 x 4 lookups, and more.
    codes = [api.get("/m/lookup", params=LOOKUP, headers=coop).status_code for _ in range(600)]
    assert codes == [200] * 600
    small = [api.get("/m/lookup", params=LOOKUP, headers={"X-API-Key": "k-small"})
             for _ in range(5)]  # fmt: skip
    assert [a.status_code for a in small] == [200, 200, 200, 429, 429]  # its own burst
    assert int(small[-1].headers["Retry-After"]) >= 1
    guesses = [api.get("/m/lookup", params=LOOKUP, headers={"X-API-Key": f"g{n}"}).status_code
               for n in range(20)]  # fmt: skip
    assert guesses == [401] * 5 + [429] * 15  # the pre-key bucket: low, per address
    assert api.get("/status").status_code == 429  # open routes count there too


def test_anonymous_mode_gives_each_address_the_trusted_default() -> None:
    api = TestClient(build_api(plain_backend(), server_gate(None)), base_url=LOCAL)
    codes = [api.get("/m/lookup", params=LOOKUP).status_code for _ in range(600)]
    assert codes == [200] * 600


def test_every_503_carries_retry_after() -> None:
    class NotApplied(AppliedAtOnce):
        async def publish(self, topic, records) -> None:
            from modstream.serve.backend import ApiError

            raise ApiError(503, "written, but not yet applied here: retry the read")

    controls = BankControls()
    bank = Bank(controls=controls)
    backend = Backend(bank, controls, NotApplied(bank, controls), None, None)  # type: ignore[arg-type]
    answer = TestClient(build_api(backend), base_url=LOCAL).post("/c/banks", json={"name": "B"})
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) >= 1


def test_api_key_create_writes_a_keys_own_rate(tmp_path) -> None:
    keys = tmp_path / "keys.jsonl"
    args = ["api-key", "create", "coop", "--role", "lookup", "--file", str(keys)]
    assert main([*args, "--rate", "2000", "--burst", "5000"]) == 0
    row = orjson.loads(keys.read_bytes())
    assert (row["rate_per_s"], row["burst"]) == (2000.0, 5000.0)
    assert main([*args, "--rate", "-1"]) != 0
    assert len(keys.read_bytes().splitlines()) == 1


def test_hash_answers_hma_types_plus_banked_ones_by_default() -> None:
    backend = memory_backend()
    api = TestClient(build_api(backend), base_url=LOCAL)
    assert api.post("/h/hash", files=PHOTO).json() == {"pdq": PDQ}  # one lookup, as on HMA
    api.post("/c/banks", json={"name": "EXCHANGE"})
    md5 = "0" * 32
    api.post("/c/bank/EXCHANGE/signal", json={"md5": md5})  # an md5 bank, from elsewhere
    assert set(api.post("/h/hash", files=PHOTO).json()) == {"pdq", "md5"}
    assert set(api.post("/h/hash", files=PHOTO, params={"types": "phash"}).json()) == {"phash"}
    found = api.post("/m/lookup", files=PHOTO).json()  # hash-and-match: every type
    assert {"pdq", "md5", "sha256", "phash"} <= set(found)

    only_hma = TestClient(build_api(memory_backend(hash_types="hma")), base_url=LOCAL)
    only_hma.post("/c/banks", json={"name": "EXCHANGE"})
    only_hma.post("/c/bank/EXCHANGE/signal", json={"md5": md5})
    assert only_hma.post("/h/hash", files=PHOTO).json() == {"pdq": PDQ}
    every = TestClient(build_api(memory_backend(hash_types="all")), base_url=LOCAL)
    assert {"pdq", "md5", "sha256", "phash"} <= set(every.post("/h/hash", files=PHOTO).json())


# ---- 4: Coop sends no key: behind an authenticating proxy on another host -----------------


def test_coop_behind_an_authenticating_proxy_on_another_host(tmp_path) -> None:
    """The proxy forwards ``Host: modstream.internal`` (listed in MODSTREAM_API_ALLOWED_HOSTS)
    and adds ``X-API-Key``; a server-to-server call carries no ``Origin``."""
    keys = tmp_path / "keys.jsonl"
    keys.write_bytes(key_record("coop", "k-coop", ["lookup", "shared_bank_admin"], []) + b"\n")
    sites = SitePolicy.for_server("0.0.0.0", ["modstream.internal"])
    api = TestClient(
        build_api(plain_backend(), server_gate(KeyRing(keys)), sites=sites),
        base_url=PROXIED,
    )
    proxied = {"X-API-Key": "k-coop"}
    created = api.post(
        f"{PROXIED}//c/banks", json={"name": "COOP", "enabled_ratio": "1.0"}, headers=proxied
    )
    assert created.status_code == 201
    assert api.get(f"{PROXIED}//c/bank/COOP", headers=proxied).status_code == 200
    assert api.put("/c/bank/COOP", json={"enabled_ratio": "0.5"}, headers=proxied).json() == {
        "matching_enabled_ratio": 0.5,
        "name": "COOP",
    }
    assert api.get("/m/lookup", params=LOOKUP, headers=proxied).status_code == 200
    assert api.post("/c/banks", json={"name": "X"}).status_code == 401  # the proxy's key
    other = {**proxied, "Host": "elsewhere.example"}
    assert api.get("/c/bank/COOP", headers=other).status_code == 400
    browser = {**proxied, "Origin": "https://evil.example"}
    assert api.delete("/c/bank/COOP", headers=browser).status_code == 403
    assert api.delete("/c/bank/COOP", headers=proxied).status_code == 200
