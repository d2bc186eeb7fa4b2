"""Throughput and latency of one worker on the local broker (run by hand: `make bench`).

Publishes a burst of text-only events, then of 640x480 inline JPEG events, and times how fast
one worker turns them into decisions; then paces events at half the measured image peak and
reports end-to-end latency (publish to decision read back). Topics are isolated per run.
Once the worker has stopped, the decisions are read to their committed end and every event
published must have exactly one (the figures of a run that lost or doubled one are void).
"""

from __future__ import annotations

import asyncio
import base64
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer
from limit import ready

from modstream.demo import encode, sample
from modstream.settings import Settings
from modstream.stream.client import end_offsets, publish, read_topic, scan_table
from modstream.stream.topics import delete_topics, ensure_topics

RUN = uuid.uuid4().hex[:8]
ENV = {
    "MODSTREAM_TOPIC_PREFIX": f"bench{RUN}.",
    "MODSTREAM_APP_ID": f"modstream-bench-{RUN}",
    "MODSTREAM_LOG_LEVEL": "WARNING",
    "MODSTREAM_DATA_DIR": f"/tmp/modstream-bench-{RUN}",
}
SETTINGS = Settings.from_env({**os.environ, **ENV})  # TLS/SASL settings from the environment


def event(event_id: str, **fields) -> tuple[bytes, bytes]:
    body = {
        "schema": 1,
        "event_id": event_id,
        "platform": "bench",
        "content_id": event_id,
        "uploader_id": f"u{hash(event_id) % 1000}",
        "created_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        **fields,
    }
    return event_id.encode(), orjson.dumps(body)


def photos(count: int) -> list[bytes]:
    names = ["astronaut", "coffee", "rocket", "chelsea", "camera", "coins", "immunohistochemistry"]
    base = [sample(n).resize((640, 480)) for n in names]
    return [encode(base[i % len(base)].rotate(i % 7), quality=85) for i in range(count)]


async def burst(records: list[tuple[bytes, bytes]]) -> float:
    """Events per second from the first publish to the last decision."""
    ids = {key.decode() for key, _ in records}
    start = await end_offsets(SETTINGS.kafka, SETTINGS.topic("decisions"))
    started = time.perf_counter()
    await publish(SETTINGS.kafka, SETTINGS.topic("uploads"), records)
    seen = set()
    async for key, _ in read_topic(
        SETTINGS.kafka, SETTINGS.topic("decisions"), start=start, timeout_s=60
    ):
        seen.add(key.decode())
        if ids <= seen:
            break
    if not ids <= seen:
        raise SystemExit(f"{len(ids - seen)} of {len(ids)} events not decided in the burst")
    return len(ids) / (time.perf_counter() - started)


async def decisions_per_event() -> Counter[str]:
    """How many decisions each event has, over the whole topic to its committed end."""
    counts: Counter[str] = Counter()

    def count(_partition: int, _key: bytes, value: bytes | None) -> None:
        counts[orjson.loads(value or b"{}").get("event_id", "")] += 1

    await scan_table(SETTINGS.kafka, SETTINGS.topic("decisions"), count)
    return counts


def exactly_once(counts: Counter[str], published: set[str]) -> str:
    """A line saying each event was decided once; exits with the counts if not."""
    lost = published - set(counts)
    doubled = {i: n for i, n in counts.items() if n > 1}
    unexpected = set(counts) - published
    if lost or doubled or unexpected:
        raise SystemExit(
            f"not exactly once: {len(lost)} lost, {len(doubled)} decided more than once, "
            f"{len(unexpected)} unknown ids (e.g. {sorted(lost)[:3]} {sorted(doubled)[:3]})"
        )
    return f"decisions: {len(published):,} events, each decided exactly once (read to the end)"


async def paced(records: list[tuple[bytes, bytes]], rate: float) -> list[float]:
    """End-to-end latencies (s) with events published at ``rate`` per second."""
    sent: dict[str, float] = {}
    latencies: list[float] = []
    start_offsets = await end_offsets(SETTINGS.kafka, SETTINGS.topic("decisions"))

    async def reader() -> None:
        async for key, _ in read_topic(
            SETTINGS.kafka, SETTINGS.topic("decisions"), start=start_offsets, timeout_s=30
        ):
            event_id = key.decode()
            if event_id in sent:
                latencies.append(time.perf_counter() - sent.pop(event_id))
            if len(latencies) == len(records):
                return

    task = asyncio.create_task(reader())
    await asyncio.sleep(1)
    producer = AIOKafkaProducer(
        **SETTINGS.kafka.options(), linger_ms=0, max_request_size=8 * 1024 * 1024
    )
    await producer.start()
    t0 = time.perf_counter()
    for n, (key, value) in enumerate(records):
        await asyncio.sleep(max(0.0, t0 + n / rate - time.perf_counter()))
        sent[key.decode()] = time.perf_counter()
        await producer.send(SETTINGS.topic("uploads"), key=key, value=value)
    await producer.flush()
    await producer.stop()
    await task
    return latencies


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


async def main() -> None:
    await ensure_topics(SETTINGS)
    log = open(f"/tmp/modstream-bench-{RUN}.log", "ab")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "modstream.cli", "worker"],
        env=dict(os.environ, **ENV),
        stdout=log,
        stderr=log,
    )
    published: set[str] = set()

    async def burst_of(records: list[tuple[bytes, bytes]]) -> float:
        published.update(key.decode() for key, _ in records)
        return await burst(records)

    try:
        await ready(SETTINGS.web_port)
        await burst_of([event(f"warm-{i}", text="warm up") for i in range(500)])
        texts = [
            "Police said the group claimed responsibility, according to reporters.",
            "join the caravan, glory to the martyrs",
            "what a match last night",
        ]
        text_rate = await burst_of([event(f"t{RUN}-{i}", text=texts[i % 3]) for i in range(20000)])
        # A third to review: each such decision also writes its review case (issue 14).
        texts[1] = "Glory to our martyrs! Rise up, brothers, and join the ranks."
        review_rate = await burst_of(
            [event(f"r{RUN}-{i}", text=texts[i % 3]) for i in range(20000)]
        )
        pics = photos(64)
        image_events = [
            event(
                f"i{RUN}-{i}",
                media=[
                    {
                        "media_id": "m",
                        "kind": "image",
                        "data_b64": base64.b64encode(pics[i % 64]).decode(),
                    }
                ],
            )
            for i in range(1500)
        ]
        image_rate = await burst_of(image_events)
        paced_events = [
            event(f"p{RUN}-{i}", media=img)
            for i, (_, raw) in enumerate(image_events[:600])
            for img in [orjson.loads(raw)["media"]]
        ]
        published.update(key.decode() for key, _ in paced_events)
        latencies = await paced(paced_events, rate=image_rate / 2)
        worker.terminate()  # it commits or aborts what it holds: nothing more to come
        worker.wait(timeout=30)
        once = exactly_once(await decisions_per_event(), published)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        await delete_topics(SETTINGS)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, broker on the same machine"
    )
    print(once)
    print(f"text-only events/s (one worker): {text_rate:,.0f}")
    print(f"text-only events/s, a third of them to review: {review_rate:,.0f}")
    print(
        f"image events/s (640x480 JPEG inline, one worker, "
        f"{SETTINGS.hash_workers} hash processes): {image_rate:,.0f}"
    )
    print(
        f"end-to-end latency at {image_rate / 2:,.0f} image events/s: "
        f"p50 {pct(latencies, 50):.0f} ms, p99 {pct(latencies, 99):.0f} ms "
        f"({len(latencies)} events)"
    )


if __name__ == "__main__":
    asyncio.run(main())
