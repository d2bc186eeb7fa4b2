"""Keys stay inside their platforms (issue 24): banks a platform owns are curated only by
keys holding it, shared banks by ``shared_bank_admin``; every request is rate limited by its
client before any key is looked up. In memory; through a real server:
tests/test_platform_kafka.py."""

from __future__ import annotations

import orjson
import pytest
from fastapi.testclient import TestClient
from test_http_api import PDQ, AppliedAtOnce

from modstream.bank.bank import Bank
from modstream.bank.controls import BankControls
from modstream.contracts import BankConfig, PlatformPolicy
from modstream.serve.access import Gate, KeyRing, RateLimit, bank_owners, digest, key_record
from modstream.serve.app import build_api
from modstream.serve.backend import Backend
from modstream.serve.exchanges import ExchangeAdmin

#: The in-memory client's host: one this server answers for (not Starlette's "testserver").
LOCAL = "http://localhost"


def _keys(path, *records: bytes) -> KeyRing:
    path.write_bytes(b"".join(r + b"\n" for r in records))
    return KeyRing(path)


@pytest.fixture
def platforms_api(tmp_path):
    """alpha's and beta's bank_admin keys, a shared curator, an old platform-less
    bank_admin key, and beta's false-positive bank with one entry."""
    legacy = orjson.dumps({"name": "old", "sha256": digest("k-old"), "roles": ["bank_admin"]})
    ring = _keys(
        tmp_path / "keys.jsonl",
        key_record("alpha", "k-alpha", ["bank_admin"], ["alpha"]),
        key_record("beta", "k-beta", ["bank_admin"], ["beta"]),
        key_record("curator", "k-shared", ["shared_bank_admin"], []),
        legacy,
    )
    controls = BankControls()
    bank = Bank(controls=controls)
    publisher = AppliedAtOnce(bank, controls)
    controls.apply("bank/fp-beta", BankConfig(negative=True, platforms=("beta",)).to_json())
    controls.apply("platform/alpha", PlatformPolicy(auto_bank="ALPHA_CONFIRMED").to_json())
    backend = Backend(bank, controls, publisher, None, None)  # type: ignore[arg-type]
    admin = ExchangeAdmin(backend, publisher.exchanges, tmp_path)
    api = TestClient(
        build_api(backend, Gate(ring, RateLimit(1000, 1000)), exchanges=admin), base_url=LOCAL
    )
    as_beta = {"X-API-Key": "k-beta"}
    added = api.post("/c/bank/fp-beta/signal", json={"pdq": PDQ}, headers=as_beta)
    assert added.status_code == 200
    return api, controls


def test_bank_owners_from_name_config_and_auto_bank() -> None:
    controls = BankControls()
    controls.apply("platform/alpha", PlatformPolicy(auto_bank="MINE").to_json())
    controls.apply("bank/BOTH", BankConfig(negative=True, platforms=("a", "b")).to_json())
    assert bank_owners("fp-beta", controls) == {"beta"}  # before review writes its config
    assert bank_owners("MINE", controls) == {"alpha"}
    assert bank_owners("BOTH", controls) == {"a", "b"}
    assert bank_owners("SHARED", controls) == frozenset()
    assert bank_owners("fp-", controls) == frozenset()


def test_a_platform_key_cannot_touch_another_platforms_bank(platforms_api) -> None:
    api, controls = platforms_api
    alpha = {"X-API-Key": "k-alpha"}
    for refused in (
        api.post("/c/bank/fp-beta/signal", json={"pdq": PDQ}, headers=alpha),
        api.put("/c/bank/fp-beta", json={"enabled_ratio": 0}, headers=alpha),
        api.delete("/c/bank/fp-beta", headers=alpha),
        api.get("/c/bank/fp-beta", headers=alpha),
        api.get("/c/bank/fp-beta/content/1", headers=alpha),
    ):
        assert refused.status_code == 403, refused.text
    assert controls.bank("fp-beta").enabled_ratio == 1.0 and controls.bank("fp-beta").negative
    assert "fp-beta" not in [b["name"] for b in api.get("/c/banks", headers=alpha).json()]
    # The owner may; and alpha curates the bank its own confirmed reviews feed.
    beta = {"X-API-Key": "k-beta"}
    assert api.get("/c/banks", headers=beta).json() == [
        {"matching_enabled_ratio": 1.0, "name": "fp-beta"}
    ]
    assert api.post("/c/bank/ALPHA_CONFIRMED/signal", json={"pdq": PDQ}, headers=alpha)
    assert api.put("/c/bank/ALPHA_CONFIRMED", json={"enabled_ratio": 0.5},
                   headers=beta).status_code == 403  # fmt: skip


def test_shared_banks_need_their_own_role(platforms_api) -> None:
    api, controls = platforms_api
    alpha, shared, old = ({"X-API-Key": k} for k in ("k-alpha", "k-shared", "k-old"))
    assert api.post("/c/banks", json={"name": "SHARED"}, headers=alpha).status_code == 403
    assert api.post("/c/banks", json={"name": "SHARED"}, headers=shared).status_code == 201
    assert api.put("/c/bank/SHARED", json={"enabled_ratio": 0}, headers=alpha).status_code == 403
    assert api.get("/c/bank/SHARED", headers=alpha).status_code == 200  # read: either role
    # A platform-less bank_admin key from before keeps the shared banks, gets no platform's.
    assert api.post("/c/bank/SHARED/signal", json={"pdq": PDQ}, headers=old).status_code == 200
    assert api.delete("/c/bank/fp-beta", headers=old).status_code == 403
    assert api.delete("/c/bank/fp-beta", headers=shared).status_code == 403
    # Exchanges create and feed shared banks, and credentials serve all of an API's.
    exchange = {"bank": "TX", "api": "fb_threatexchange", "api_json": {"privacy_group": 1}}
    assert api.post("/c/exchanges", json=exchange, headers=alpha).status_code == 403
    credentials = {"credential_json": {"env": "EXCHANGE_CREDENTIALS_TX"}}
    assert (
        api.post("/c/exchanges/api/fb_threatexchange", json=credentials, headers=alpha)
    ).status_code == 403
    assert api.post("/c/exchanges", json=exchange, headers=shared).status_code == 201
    assert api.put("/c/exchange/TX", json={"enabled": False}, headers=alpha).status_code == 403
    assert api.delete("/c/exchange/TX", headers=alpha).status_code == 403
    assert controls.bank("TX") == BankConfig()


def test_api_key_create_needs_platforms_for_bank_admin(tmp_path) -> None:
    with pytest.raises(ValueError, match="shared_bank_admin"):
        key_record("k", "x", ["bank_admin"], [])
    from modstream.cli import main

    keys = tmp_path / "keys.jsonl"
    assert main(["api-key", "create", "c", "--role", "shared_bank_admin", "--file", str(keys)]) == 0
    assert orjson.loads(keys.read_bytes())["roles"] == ["shared_bank_admin"]


def test_wrong_keys_and_open_routes_are_rate_limited_by_client(tmp_path) -> None:
    ring = _keys(tmp_path / "keys.jsonl", key_record("coop", "k-lookup", ["lookup"], []))
    controls = BankControls()
    bank = Bank(controls=controls)
    backend = Backend(bank, controls, AppliedAtOnce(bank, controls), None, None)  # type: ignore[arg-type]
    api = TestClient(build_api(backend, Gate(ring, RateLimit(rate=0.5, burst=5))), base_url=LOCAL)
    lookup = {"signal_type": "pdq", "signal": PDQ}
    good = {"X-API-Key": "k-lookup"}
    # A found key is counted against itself, not against its client address.
    assert [api.get("/m/lookup", params=lookup, headers=good).status_code for _ in range(5)] == [
        200
    ] * 5
    assert api.get("/status").status_code == 200
    wrong = [api.get("/m/lookup", params=lookup, headers={"X-API-Key": f"guess{n}"})
             for n in range(30)]  # fmt: skip
    codes = [answer.status_code for answer in wrong]
    assert codes.count(401) <= 5 and codes.count(429) >= 25
    assert int(wrong[-1].headers["Retry-After"]) >= 1
    assert api.get("/status").status_code == 429  # open routes too
    assert api.get("/m/lookup", params=lookup, headers=good).status_code == 429


def test_credential_references_over_http_are_confined_and_sync_errors_generic(
    tmp_path, caplog
) -> None:
    from modstream.contracts import ExchangeConfig
    from modstream.exchanges.catalog import ExchangeSetupError, open_exchange
    from modstream.serve.exchanges import ExchangeBook

    controls = BankControls()
    bank = Bank(controls=controls)
    publisher = AppliedAtOnce(bank, controls)
    backend = Backend(bank, controls, publisher, None, None)  # type: ignore[arg-type]
    vault = tmp_path / "vault"
    admin = ExchangeAdmin(backend, ExchangeBook(), tmp_path / "files", vault)
    api = TestClient(build_api(backend, exchanges=admin), base_url=LOCAL)
    path = "/c/exchanges/api/fb_threatexchange"
    for outside in ({"file": "/etc/shadow"}, {"file": "../keys.jsonl"},
                    {"env": "MODSTREAM_KAFKA_PASSWORD"}, {"env": "HOME"}):  # fmt: skip
        refused = api.post(path, json={"credential_json": outside})
        assert refused.status_code == 403, outside
        assert "MODSTREAM_API_CREDENTIALS_DIR" in refused.json()["message"]
    assert api.post(path, json={"credential_json": {"file": "tx/token"}}).status_code == 200
    # Without a credentials directory no file may be named over HTTP.
    closed = ExchangeAdmin(backend, ExchangeBook(), None)
    api = TestClient(build_api(backend, exchanges=closed), base_url=LOCAL)
    assert api.post(path, json={"credential_json": {"file": "x"}}).status_code == 403

    # What the status shows of a failed sync: the same for a missing file and a bad one.
    vault.mkdir()
    (vault / "bad").write_text("not a token")
    messages = []
    for where in ("/etc/no-such-file", str(vault / "bad"), str(vault)):
        config = ExchangeConfig(
            name="te", api="fb_threatexchange", bank="b",
            settings={"privacy_group": "1"}, credentials={"file": where},
        )  # fmt: skip
        with pytest.raises(ExchangeSetupError) as error:
            open_exchange(config)
        messages.append(str(error.value))
    assert len(set(messages)) == 1 and "no-such-file" not in messages[0]
    reasons = [getattr(r, "reason", "") for r in caplog.records]
    assert "No such file" in reasons[0] and "not a regular file" in reasons[2]  # the log says why
