"""Platforms stay apart on a real broker (issue 24): a forged review outcome on one platform's
topic for another's decision is refused by real workers and the takedown stands; a
platform's path media cannot reach another's files; and a real ``modstream serve`` keeps
each key to its platforms' banks and limits wrong keys by client."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.error
import urllib.request

import orjson
import pytest
from conftest import start_server
from streaming import collect, dead_letters, inline, send

from modstream.contracts import BankConfig, BankEntry, dumps
from modstream.demo import encode, sample
from modstream.engine import hash_media
from modstream.ingest.trust import outcomes_topic, platform_topic, reviews_topic
from modstream.settings import Settings
from modstream.stream.client import read_topic
from modstream.stream.topics import ensure_topics

pytestmark = pytest.mark.kafka

ROCKET = encode(sample("rocket"), quality=90)
PDQ = hash_media("m", "image", ROCKET, 10**8).signals["pdq"]["value"]
SHARED = BankEntry("shared", "rocket", "pdq", PDQ, ("tve",), "takedown", "")


def bind_platforms(workers, *platforms: str) -> None:
    """The group's workers and commands with ``MODSTREAM_PLATFORMS`` (and its topics)."""
    workers.env["MODSTREAM_PLATFORMS"] = ",".join(platforms)
    workers.settings = Settings.from_env(workers.env)
    asyncio.run(ensure_topics(workers.settings))


def event(platform: str, event_id: str, media: list[dict]) -> tuple[bytes, bytes]:
    body = {"schema": 1, "event_id": event_id, "platform": platform, "content_id": event_id,
            "uploader_id": "u1", "created_at": "2026-11-26T10:00:00Z", "media": media}  # fmt: skip
    return f"{platform}/{event_id}".encode(), orjson.dumps(body)


def outcome(decision: dict, verdict: str, **changes: str) -> tuple[bytes, bytes]:
    ids = {k: decision[k] for k in ("decision_id", "event_id", "platform", "content_id")}
    body = {"schema": 1, **ids, "outcome": verdict, "reviewer": "mallory",
            "decided_at": "2026-11-30T09:00:00Z", **changes}  # fmt: skip
    return decision["decision_id"].encode(), orjson.dumps(body)


async def records_of(workers, topic: str) -> list[dict]:
    return [
        orjson.loads(value)
        async for _, value in read_topic(
            workers.settings.kafka, workers.settings.topic(topic), timeout_s=3
        )
    ]


def test_a_forged_outcome_for_another_platform_is_refused_and_the_takedown_stands(
    workers, tmp_path
) -> None:
    bind_platforms(workers, "alpha", "victim")
    root = workers.settings.media_root
    assert root is not None
    (root / "victim").mkdir()
    (root / "victim" / "secret.jpg").write_bytes(ROCKET)
    asyncio.run(send(workers, "hashbank", [(SHARED.key.encode(), dumps(SHARED))]))
    workers.start()

    async def scenario() -> None:
        await send(workers, platform_topic("victim"), [event("victim", "v1", inline(ROCKET))])
        taken = (await collect(workers, "decisions", {"v1"}))["v1"][0]
        assert taken["verdict"] == "takedown"

        # alpha's review tool copies the victim's ids onto its own topic, as the victim and
        # as itself; and alpha's events probe the victim's files.
        forged = outcome(taken, "overturn")
        as_alpha = outcome(taken, "overturn", platform="alpha")
        await send(workers, outcomes_topic("alpha"), [forged, as_alpha])
        paths = ["../victim/secret.jpg", "../victim/none.jpg"]
        probes = [
            event("alpha", f"probe-{n}", [{"media_id": "m", "kind": "image", "path": path}])
            for n, path in enumerate(paths)
        ]
        await send(workers, platform_topic("alpha"), probes)

        letters = await dead_letters(workers, 2)
        errors = sorted(letter["error"] for letter in letters)
        assert "speaks for 'alpha', not 'victim'" in errors[1], errors
        assert errors[0].startswith("outcome's platform differ"), errors
        probed = await collect(workers, "decisions", {"probe-0", "probe-1"})
        reasons = {probed[f"probe-{n}"][0]["media_errors"][0]["reason"] for n in range(2)}
        assert reasons == {"path_outside_root"}  # one answer, whether the file exists or not

        # The takedown stands: no reinstatement, no false positive, the same file is taken
        # down again.
        media = [{"media_id": "m", "kind": "image", "path": "secret.jpg"}]
        await send(workers, platform_topic("victim"), [event("victim", "v2", media)])
        again = (await collect(workers, "decisions", {"v2"}))["v2"][0]
        assert again["verdict"] == "takedown", again
        assert await records_of(workers, "reinstatements") == []
        decisions = await records_of(workers, "decisions")
        assert [d["source"] for d in decisions if d["event_id"] == "v1"] == ["automated"]

    asyncio.run(scenario())

    # The victim's own reviewer, through the CLI (it publishes to the victim's topic): applied.
    decision = tmp_path / "v1.json"
    decision.write_bytes(orjson.dumps(asyncio.run(collect(workers, "decisions", {"v1"}))["v1"][0]))
    done = subprocess.run(
        [sys.executable, "-m", "modstream.cli", "review", "submit", "overturn",
         "--decision", str(decision), "--reviewer", "victim-rev"],
        env=workers.worker_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    reinstated = asyncio.run(collect(workers, "reinstatements", {"v1"}))
    assert reinstated["v1"][0]["review"]["reviewer"] == "victim-rev"
    # alpha's probes went to review: on alpha's own review topic, and nowhere else.
    reviews = asyncio.run(records_of(workers, reviews_topic("alpha")))
    assert sorted(d["event_id"] for d in reviews) == ["probe-0", "probe-1"]
    assert asyncio.run(records_of(workers, "reviews")) == []


def _call(url: str, key: str, method: str = "GET", body: dict | None = None) -> int:
    data = orjson.dumps(body) if body is not None else None
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_real_server_keeps_keys_to_their_platforms_banks_and_limits_wrong_keys(
    workers, tmp_path
) -> None:
    from modstream.serve.access import key_record

    bind_platforms(workers, "alpha", "victim")
    fp = BankConfig(negative=True, platforms=("victim",))
    asyncio.run(send(workers, "bank.config", [(b"bank/fp-victim", fp.to_json())]))
    keys = tmp_path / "keys.jsonl"
    keys.write_bytes(
        key_record("alpha", "k-alpha", ["bank_admin", "review"], ["alpha"]) + b"\n"
        + key_record("victim", "k-victim", ["bank_admin"], ["victim"]) + b"\n"
    )  # fmt: skip
    url, proc = start_server(workers, tmp_path, MODSTREAM_API_KEYS_FILE=str(keys),
                             MODSTREAM_API_PREKEY_RATE_PER_S="5",
                             MODSTREAM_API_PREKEY_BURST="20")  # fmt: skip
    try:
        bank = f"{url}/c/bank/fp-victim"
        assert _call(bank, "k-alpha", "PUT", {"enabled_ratio": 0}) == 403
        assert _call(f"{bank}/signal", "k-alpha", "POST", {"pdq": PDQ}) == 403
        assert _call(bank, "k-alpha", "DELETE") == 403
        assert _call(f"{url}/c/banks", "k-alpha", "POST", {"name": "SHARED"}) == 403
        assert _call(f"{bank}/signal", "k-victim", "POST", {"pdq": PDQ}) == 200
        wrong = [_call(f"{url}/c/banks", f"guess-{n}") for n in range(300)]
        assert wrong.count(429) >= 200 and wrong.count(401) + wrong.count(429) == 300
    finally:
        proc.terminate()
        proc.wait(timeout=20)
