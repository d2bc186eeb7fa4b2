"""Platforms bound to topics: a producer cannot write strikes into another platform's users."""

from __future__ import annotations

import base64

import orjson
import pytest
from streaming import collect, dead_letters, send, upload

from modstream.contracts import BankEntry, dumps
from modstream.demo import encode, sample
from modstream.engine import hash_media
from modstream.ingest.trust import PlatformBinding, platform_topic
from modstream.settings import Settings
from modstream.stream.topics import ensure_topics


def test_a_bound_topic_speaks_for_its_platform_only():
    binding = PlatformBinding.of(["alpha", "beta"], lambda name: f"t.{name}")
    assert binding.refusal("t.uploads.platform.alpha", "alpha") is None
    assert binding.refusal("t.uploads.platform.alpha", "beta")[0] == "platform_mismatch"
    assert binding.refusal("t.uploads", "alpha")[0] == "unbound_topic"
    assert PlatformBinding.of([]).refusal("uploads", "anyone") is None


@pytest.mark.parametrize("name", ["a.b", "a/b", "", "x" * 201, "ünï"])
def test_platform_names_must_make_safe_topic_names(name):
    with pytest.raises(ValueError):
        platform_topic(name)
    with pytest.raises(ValueError):
        Settings(platforms=(name,)).validate()


def with_platform(record: tuple[bytes, bytes], platform: str) -> tuple[bytes, bytes]:
    key, value = record
    return key, orjson.dumps({**orjson.loads(value), "platform": platform})


@pytest.mark.kafka
async def test_strikes_cannot_be_forged_from_another_platforms_topic(workers):
    workers.env["MODSTREAM_PLATFORMS"] = "alpha,beta"
    workers.settings = Settings.from_env(workers.env)
    await ensure_topics(workers.settings)
    banned = encode(sample("rocket"), quality=90)
    pdq = hash_media("m", "image", banned, 10**8).signals["pdq"]["value"]
    entry = BankEntry("tve", "rocket", "pdq", pdq, (), "takedown", "")
    await send(workers, "hashbank", [(entry.key.encode(), dumps(entry))])
    workers.start()

    media = [{"media_id": "m1", "kind": "image", "data_b64": base64.b64encode(banned).decode()}]
    alpha, beta = platform_topic("alpha"), platform_topic("beta")
    # alpha's producer writes three takedowns in the name of beta's user bob ...
    forged = [with_platform(upload(f"forged-{i}", media=media, uploader="bob"), "beta")
              for i in range(3)]  # fmt: skip
    await send(workers, alpha, forged)
    # ... and something to the shared topic, which bound workers no longer trust.
    await send(workers, "uploads", [with_platform(upload("shared", text="hi"), "alpha")])
    letters = await dead_letters(workers, 4)
    # bob's own harmless post, from beta's topic, is judged on its own.
    harmless = upload("bob-post", text="lovely weather at the lake")
    await send(workers, beta, [with_platform(harmless, "beta")])
    await send(workers, alpha, [with_platform(upload("alpha-post", text="sunny"), "alpha")])
    decisions = await collect(workers, "decisions", {"bob-post", "alpha-post"})
    assert decisions["bob-post"][0]["verdict"] == "allow"
    assert "repeat_uploader" not in {e["kind"] for e in decisions["bob-post"][0]["evidence"]}
    assert decisions["alpha-post"][0]["platform"] == "alpha"
    assert not {"forged-0", "forged-1", "forged-2", "shared"} & set(decisions)
    errors = sorted(letter["error"] for letter in letters)
    assert sum("speaks for 'alpha', not 'beta'" in e for e in errors) == 3
    assert sum("platforms are bound to topics" in e for e in errors) == 1
