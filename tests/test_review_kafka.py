"""The review loop on a real broker with two real workers: outcomes in, human decisions
out, and what they change on every worker within seconds, across a restart."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import orjson
import pytest
from streaming import (
    collect,
    dead_letters,
    eventually,
    inline,
    send,
    upload,
    uploaders_on_each_partition,
)

from modstream.contracts import BankEntry, PlatformPolicy, dumps
from modstream.demo import encode, sample
from modstream.engine import hash_media

pytestmark = pytest.mark.kafka

PROPAGANDA = "Glory to our martyrs! Rise up, brothers, and join the ranks."
ROCKET = encode(sample("rocket"), quality=90)
NEWS = encode(sample("rocket"), quality=60)  # the same picture in another file
PDQ = hash_media("m", "image", ROCKET, 10**8).signals["pdq"]["value"]


def outcome(decision: dict, verdict: str, **more) -> tuple[bytes, bytes]:
    body = {
        "schema": 1,
        **{k: decision[k] for k in ("decision_id", "event_id", "platform", "content_id")},
        "outcome": verdict,
        "reviewer": "rev-7",
        "decided_at": "2026-11-30T09:00:00Z",
        **more,
    }
    return decision["decision_id"].encode(), orjson.dumps(body)


async def test_reviewers_verdicts_flow_back_to_every_worker_and_survive_a_restart(
    workers, tmp_path
):
    shared = BankEntry("shared", "rocket", "pdq", PDQ, ("tve",), "takedown", "")
    await send(workers, "hashbank", [(shared.key.encode(), dumps(shared))])
    policy = PlatformPolicy(auto_bank="test-own")
    await send(workers, "bank.config", [(b"platform/test", policy.to_json())])
    workers.start()
    workers.start()
    await workers.wait_split(workers.settings.topic("uploads.hashed"))

    await send(
        workers,
        "uploads",
        [upload("news", media=inline(NEWS)), upload("post-1", text=PROPAGANDA, uploader="u2")],
    )
    automated = {
        k: v[0] for k, v in (await collect(workers, "decisions", {"news", "post-1"})).items()
    }
    assert (automated["news"]["verdict"], automated["post-1"]["verdict"]) == ("takedown", "review")

    # One outcome through the CLI (as a reviewer would), one as a review tool publishes it.
    decision_file = tmp_path / "post-1.json"
    decision_file.write_bytes(orjson.dumps(automated["post-1"]))
    cli = subprocess.run(
        [sys.executable, "-m", "modstream.cli", "review", "submit", "confirm",
         "--decision", str(decision_file), "--reviewer", "rev-7", "--label", "tve"],
        env=workers.worker_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    submitted = time.monotonic()
    await send(
        workers,
        "review.outcomes",
        [
            outcome(automated["news"], "overturn", reason="a news report"),
            (b"x", b'{"schema": 1, "outcome": "confirm"}'),  # malformed
            outcome({**automated["news"], "decision_id": "no-such-decision"}, "confirm"),
        ],
    )
    decided = await collect(
        workers, "decisions", {"news", "post-1"}, copies={"news": 2, "post-1": 2}
    )
    assert {k: len(v) for k, v in decided.items()} == {"news": 2, "post-1": 2}  # once each
    human = {k: v[-1] for k, v in decided.items()}
    assert (human["news"]["source"], human["news"]["verdict"]) == ("human", "allow")
    assert human["news"]["supersedes"] == automated["news"]["decision_id"]
    assert (human["post-1"]["source"], human["post-1"]["verdict"]) == ("human", "takedown")
    reinstated = await collect(workers, "reinstatements", {"news"})
    assert reinstated["news"][0]["decision_id"] == human["news"]["decision_id"]
    letters = await dead_letters(workers, 2)
    assert sorted(letter["error"].split(":")[0] for letter in letters) == [
        "no case for decision no-such-decision",
        "review_outcome.decision_id",
    ]

    # Within seconds, on both workers (one uploader per partition): the overturned file no
    # longer matches, the entry still matches other files, the confirmed text is banked.
    await _wait_for_replication(workers, submitted)
    reposts = []
    for n, uploader in enumerate(uploaders_on_each_partition(workers.settings.partitions)):
        reposts += [
            upload(f"news-again-{n}", media=inline(NEWS), uploader=uploader),
            upload(f"rocket-{n}", media=inline(ROCKET), uploader=uploader),
            upload(f"post-again-{n}", text=PROPAGANDA, uploader=uploader),
        ]
    await send(workers, "uploads", reposts)
    wanted = {orjson.loads(body)["event_id"] for _, body in reposts}
    again = {k: v[0] for k, v in (await collect(workers, "decisions", wanted)).items()}
    for n in range(workers.settings.partitions):
        news = again[f"news-again-{n}"]
        assert news["verdict"] == "allow", news
        kinds = {e["kind"] for e in news["evidence"]}
        assert {"suppressed_match", "human_verdict"} <= kinds
        assert again[f"rocket-{n}"]["verdict"] == "takedown"
        text = again[f"post-again-{n}"]
        assert text["verdict"] == "takedown"
        assert any(e["kind"] == "text_match" and e["bank"] == "test-own" for e in text["evidence"])
    print(
        f"\nreposts decided per the reviews {time.monotonic() - submitted:.1f} s after the outcomes"
    )

    # A restart and a redelivery: the human verdict stands (replayed from review.verdicts).
    workers.stop_all()
    workers.start()
    await send(workers, "uploads", [upload("news", media=inline(NEWS))])
    news = (await collect(workers, "decisions", {"news"}, copies={"news": 3}))["news"]
    assert len(news) == 3, "automated, human, and the redelivery's"
    latest = news[-1]
    assert (latest["source"], latest["verdict"]) == ("automated", "allow")
    assert latest["evidence"][0]["kind"] == "human_verdict"


async def _wait_for_replication(workers, since: float, timeout: float = 60.0) -> None:
    """Until every worker has applied the review's bank entries (its bank grew)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sizes = [
            [line for line in workers.metrics(port).splitlines()
             if line.startswith('modstream_bank_entries{bank="test-own"')]
            for _, port in workers.procs
            if workers.status(port)
        ]  # fmt: skip
        if sizes and all(sizes):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"review's bank entries not on every worker {time.monotonic() - since} s")


async def test_the_example_review_tool_closes_the_loop(workers):
    """examples/review_console.py, unattended: it reads `reviews`, publishes an outcome, and
    the worker answers with the human decision."""
    workers.start()
    await send(workers, "uploads", [upload("to-review", text=PROPAGANDA)])
    first = (await collect(workers, "reviews", {"to-review"}))["to-review"][0]
    tool = subprocess.run(
        [sys.executable, "examples/review_console.py", "--reviewer", "bot", "--decide",
         "confirm", "--reason", "glorifies an attack", "--max", "1"],
        env=workers.worker_env(), capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert tool.returncode == 0, tool.stderr
    assert "REVIEW test/c-to-review" in tool.stdout
    human = (await collect(workers, "takedowns", {"to-review"}))["to-review"][0]
    assert (human["source"], human["supersedes"]) == ("human", first["decision_id"])
    assert human["review"] == {
        "outcome": "confirm",
        "reviewer": "bot",
        "reason": "glorifies an attack",
        "labels": [],
        "reviewed_at": human["decided_at"],
    }


def cli(workers, *args: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "modstream.cli", *args],
        env=workers.worker_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return run.stdout


async def test_bank_controls_shadow_quarantine_release_and_export_on_two_workers(workers, tmp_path):
    entries = [
        BankEntry("shared", "rocket", "pdq", PDQ, ("tve",), "takedown", "2026-11-01T00:00:00Z",
                  {"source": "tcap", "id": "42"}),
        BankEntry("trial", "rocket", "pdq", PDQ, (), "takedown", "2026-11-01T00:00:00Z"),
    ]  # fmt: skip
    await send(workers, "hashbank", [(e.key.encode(), dumps(e)) for e in entries])
    cli(workers, "bank", "config", "trial", "--action", "shadow")
    flood = {"MODSTREAM_FLOOD_MIN_MATCHES": "5", "MODSTREAM_FLOOD_FACTOR": "1"}
    workers.start(**flood)
    workers.start(**flood)
    await workers.wait_split(workers.settings.topic("uploads.hashed"))
    first, second = uploaders_on_each_partition(workers.settings.partitions)

    def quarantine_shown(port: int) -> bool:
        """The worker's gauge of entries in quarantine now (refreshed every 5 s)."""
        gauge = 'modstream_bank_entry_quarantined{bank="shared",'
        return any(
            line.startswith(gauge) and line.endswith(" 1.0")
            for line in workers.metrics(port).splitlines()
        )

    async def decide(prefix: str, uploader: str, count: int) -> list[dict]:
        batch = [upload(f"{prefix}-{n}", media=inline(ROCKET), uploader=uploader)
                 for n in range(count)]  # fmt: skip
        await send(workers, "uploads", batch)
        ids = [f"{prefix}-{n}" for n in range(count)]
        found = await collect(workers, "decisions", set(ids))
        return [found[i][0] for i in ids]

    # The shadow bank records what it would do and never acts; the shared entry floods on
    # the first worker after 5 matches and is quarantined there...
    flood_one = await decide("a", first, 8)  # hashed concurrently: decided in any order
    assert sorted(d["verdict"] for d in flood_one) == ["review"] * 3 + ["takedown"] * 5
    shadow = [e for e in flood_one[0]["evidence"] if e["bank"] == "trial"]
    assert [(e["kind"], e["action"], e["parts"][-1]) for e in shadow] == [
        ("shadow_match", "allow", {"would": "takedown"})
    ]
    assert {e["kind"] for e in flood_one[-1]["evidence"] if e["bank"] == "shared"} == {
        "quarantined"
    }
    # ... and on the second, which never saw it flood (shared state, bank.config).
    await eventually(
        lambda: all(quarantine_shown(port) for _, port in workers.procs),
        timeout=60,
        what="the quarantine on both workers",
    )
    assert [d["verdict"] for d in await decide("b", second, 3)] == ["review"] * 3
    shown = orjson.loads(cli(workers, "bank", "show", "shared"))
    assert list(shown["quarantined"]) == ["shared/pdq/rocket"]
    assert shown["entries"] == {"pdq": 1}

    # A person releases it: it acts again on both workers (and is exempt for a while).
    cli(workers, "bank", "release", "shared/pdq/rocket")
    await eventually(
        lambda: not any(quarantine_shown(port) for _, port in workers.procs),
        timeout=60,
        what="the release on both workers",
    )
    released = await decide("c", first, 3) + await decide("d", second, 3)
    assert [d["verdict"] for d in released] == ["takedown"] * 6

    # Export, remove, import, export again: the same bank.
    out1, out2 = tmp_path / "shared-1.csv", tmp_path / "shared-2.csv"
    cli(workers, "bank", "export", "shared", "--format", "csv", "--out", str(out1))
    cli(workers, "bank", "remove", "--bank", "shared", "--signal-type", "pdq", "rocket")
    cli(workers, "bank", "import", str(out1), "--bank", "shared")
    cli(workers, "bank", "export", "shared", "--format", "csv", "--out", str(out2))
    assert out2.read_text() == out1.read_text()
    assert '"source": "tcap"' in out1.read_text() or '""source"":""tcap""' in out1.read_text()
