"""Bounded state on a real broker (issue 24): the review-case store has one reader for the
worker's life, however many outcomes name no case, and finds cases on disk rather than in
memory; strike histories restored from the changelog are kept only if recent."""

from __future__ import annotations

import time

import orjson
import pytest
from prometheus_client import CollectorRegistry
from streaming import collect, dead_letters, send, upload

from modstream.contracts import REVIEW_CASES_TOPIC
from modstream.decide import history
from modstream.stages.metrics import PipelineMetrics
from modstream.stream import client
from modstream.stream.case_store import CaseStore
from modstream.stream.history_store import UploaderHistory, changelog_topic
from modstream.stream.pipeline import PipelineOutput

pytestmark = pytest.mark.kafka

PROPAGANDA = "Glory to our martyrs! Rise up, brothers, and join the ranks."


def _counter(metrics: PipelineMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


async def test_the_store_tails_its_partitions_with_one_reader(workers, tmp_path):
    settings = workers.settings
    topic = settings.topic(REVIEW_CASES_TOPIC)
    cases = [(f"d{n}".encode(), b"case %d" % n + b"x" * 2000) for n in range(5000)]
    await client.publish(settings.kafka, topic, cases)
    metrics = PipelineMetrics(CollectorRegistry())
    store = CaseStore(settings, PipelineOutput(settings, metrics), tmp_path / "c.db", metrics, 256)
    try:
        for partition in range(settings.partitions):
            await store.restore(partition)
        found = {}
        for key, _ in cases[:50]:
            for partition in range(settings.partitions):
                value = await store.get(key.decode(), partition)
                if value is not None:
                    found[key] = value
        # Each on its partition, read back from disk: 10 MB of cases, a 256 KiB page cache.
        assert found == dict(cases[:50])

        asked = _counter(metrics, "modstream_case_catch_ups_total")
        for n in range(300):  # ids that name no case: no consumer, no read of the partition
            assert await store.get(f"bogus-{n}", n % settings.partitions) is None
        assert _counter(metrics, "modstream_case_catch_ups_total") - asked == 300

        # A case written after the restore is found by the same reader, tailing.
        late = [(b"late", b"a late case")]
        await client.publish(settings.kafka, topic, late)
        deadline = time.monotonic() + 20
        while not any([await store.get("late", p) for p in range(settings.partitions)]):
            assert time.monotonic() < deadline
        assert _counter(metrics, "modstream_case_readers_started_total") == 1
    finally:
        await store.close()


async def test_bogus_outcomes_start_no_consumer_and_a_real_one_still_applies(workers):
    workers.start()
    await workers.wait_split(workers.settings.topic("uploads.hashed"))
    posts = [upload(f"post-{n}", text=PROPAGANDA, uploader=f"u{n}") for n in range(40)]
    await send(workers, "uploads", posts)
    automated = {
        k: v[0]
        for k, v in (await collect(workers, "decisions", {f"post-{n}" for n in range(40)})).items()
    }
    bogus = [
        (b"b%d" % n, orjson.dumps({**_outcome(automated["post-0"]), "decision_id": f"bogus-{n}"}))
        for n in range(400)
    ]
    real = (b"r", orjson.dumps(_outcome(automated["post-0"])))  # the oldest case of 40
    await send(workers, "review.outcomes", [*bogus, real])
    decided = await collect(workers, "decisions", {"post-0"}, copies={"post-0": 2})
    assert decided["post-0"][-1]["source"] == "human"
    letters = await dead_letters(workers, 400)
    assert {letter["error"].split(":")[0] for letter in letters} == {
        f"no case for decision bogus-{n}" for n in range(400)
    }
    for _, port in workers.procs:
        lines = workers.metrics(port).splitlines()
        started = [
            line for line in lines if line.startswith("modstream_case_readers_started_total")
        ]
        assert started == ["modstream_case_readers_started_total 1.0"]


class Appended:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None, int | None]] = []

    def append(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None):
        self.records.append((key, value, partition))


async def test_a_restore_keeps_recent_histories_and_tombstones_the_rest(workers):
    settings = workers.settings
    now = time.time()
    writer = await client.started(client.producer(settings.kafka))
    try:
        for key, written in ((b"p/old", now - 2 * 86400), (b"p/new", now - 600)):
            value = orjson.dumps(history.with_strike(history.empty(), "e", written))
            await writer.send_and_wait(
                changelog_topic(settings), value, key=key, partition=0,
                timestamp_ms=int(written * 1000),
            )  # fmt: skip
    finally:
        await writer.stop()
    out = Appended()
    store = UploaderHistory(settings, out, lambda key: 0)  # type: ignore[arg-type]
    await store.restore(0)
    assert len(store) == 1 and store[b"p/new"]["strikes"]
    assert store[b"p/old"] == history.empty()
    assert out.records == [(b"p/old", None, 0)]  # its tombstone, in the first batch after


def _outcome(decision: dict) -> dict:
    return {
        "schema": 1,
        **{k: decision[k] for k in ("decision_id", "event_id", "platform", "content_id")},
        "outcome": "confirm",
        "reviewer": "rev-7",
        "decided_at": "2026-11-30T09:00:00Z",
        "labels": ["tve"],
    }
