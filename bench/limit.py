"""How close the worker runs to the limit of Python on Kafka (issue 13): `make bench-limit`.

One run, side by side on the same broker, the same 20,000 text-only upload events per
round, publish to last decision read back, median of two rounds per contender:

- **bare aiokafka**: one process consumes ``uploads``, parses each event with orjson and
  produces one small decision record per event, committing after a flush (at-least-once);
- **bare Faust**: a Faust agent doing the same through ``take_events`` and ``Topic.send``;
- **modstream** (``modstream worker``), exactly-once (the default) and at-least-once.

Prints events/s and modstream's ratio to each. Each contender runs in its own process, on
topics and a consumer group of its own.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import orjson

from modstream.settings import Settings
from modstream.stream.client import publish, read_topic
from modstream.stream.topics import delete_topics, ensure_topics

EVENTS = 20_000
ROUNDS = 2
TEXTS = [
    "Police said the group claimed responsibility, according to reporters.",
    "join the caravan, glory to the martyrs",
    "what a match last night",
]


def events(tag: str, count: int) -> list[tuple[bytes, bytes]]:
    return [
        (
            f"{tag}-{i}".encode(),
            orjson.dumps(
                {
                    "schema": 1,
                    "event_id": f"{tag}-{i}",
                    "platform": "bench",
                    "content_id": f"c{i}",
                    "uploader_id": f"u{i % 1000}",
                    "created_at": "2026-11-29T10:00:00Z",
                    "text": TEXTS[i % 3],
                }
            ),
        )
        for i in range(count)
    ]


# --- the contenders that are not modstream, each run as `python bench/limit.py <name>` ---


async def bare_aiokafka(settings: Settings) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(
        settings.topic("uploads"),
        **settings.kafka.options(),
        group_id=settings.app_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(**settings.kafka.options(), linger_ms=5)
    await consumer.start()
    await producer.start()
    out = settings.topic("decisions")
    while True:
        batches = await consumer.getmany(timeout_ms=100, max_records=1000)
        for records in batches.values():
            for record in records:
                event = orjson.loads(record.value)
                decision = {"event_id": event["event_id"], "verdict": "allow"}
                await producer.send(out, orjson.dumps(decision), key=record.key)
        if batches:
            await producer.flush()
            await consumer.commit()


def bare_faust(settings: Settings) -> None:
    import faust

    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.broker}",
        web_port=settings.web_port,
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        datadir=f"/tmp/{settings.app_id}",
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
    )
    uploads = app.topic(settings.topic("uploads"), key_serializer="raw", value_serializer="raw")
    decisions = app.topic(settings.topic("decisions"), key_serializer="raw", value_serializer="raw")

    @app.agent(uploads)
    async def decide(stream):
        async for batch in stream.take_events(256, within=0.005):
            for event in batch:
                parsed = orjson.loads(event.value)
                decision = {"event_id": parsed["event_id"], "verdict": "allow"}
                await decisions.send(key=event.key, value=orjson.dumps(decision))

    sys.argv = ["faust", "worker", "-l", "warn"]
    app.main()


# --- the harness ---


async def rate(settings: Settings, tag: str) -> float:
    records = events(tag, EVENTS)
    ids = {key for key, _ in records}
    started = time.perf_counter()
    await publish(settings.kafka, settings.topic("uploads"), records)
    seen: set[bytes] = set()
    async for key, _ in read_topic(settings.kafka, settings.topic("decisions"), timeout_s=60):
        if key in ids:
            seen.add(key)
            if len(seen) == len(ids):
                break
    if len(seen) < len(ids):
        raise RuntimeError(f"{tag}: only {len(seen)} of {len(ids)} decided")
    return len(ids) / (time.perf_counter() - started)


async def measure(name: str, command: list[str], env: dict[str, str]) -> float:
    settings = Settings.from_env({**os.environ, **env})
    await ensure_topics(settings)
    log = Path(f"/tmp/{settings.app_id}.log").open("ab")  # noqa: SIM115
    proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=log, stderr=log)
    try:
        await asyncio.sleep(1)
        if name.startswith("modstream"):
            await ready(settings.web_port)
        await rate(settings, f"warm{uuid.uuid4().hex[:6]}")  # joins, compiles, warms caches
        rounds = [await rate(settings, f"r{n}{uuid.uuid4().hex[:6]}") for n in range(ROUNDS)]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        await delete_topics(settings)
    return statistics.median(rounds)


async def ready(port: int) -> None:
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError("worker not ready")


def environment(name: str, **extra: str) -> dict[str, str]:
    run = f"{name}{uuid.uuid4().hex[:6]}"
    return {
        "MODSTREAM_TOPIC_PREFIX": f"limit-{run}.",
        "MODSTREAM_APP_ID": f"limit-{run}",
        "MODSTREAM_LOG_LEVEL": "WARNING",
        "MODSTREAM_DATA_DIR": f"/tmp/limit-{run}",
        "MODSTREAM_WEB_PORT": "6171",
        **extra,
    }


async def main() -> None:
    here = [sys.executable, __file__]
    worker = [sys.executable, "-m", "modstream.cli", "worker"]
    contenders = {
        "bare aiokafka": ([*here, "aiokafka"], environment("aiokafka")),
        "bare Faust agent": ([*here, "faust"], environment("faust")),
        "modstream, exactly-once": (worker, environment("eos")),
        "modstream, at-least-once": (
            worker,
            environment("alo", MODSTREAM_PROCESSING_GUARANTEE="at_least_once"),
        ),
    }
    results = {name: await measure(name, cmd, env) for name, (cmd, env) in contenders.items()}
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, broker on the same machine; "
        f"{EVENTS:,} text events per round, median of {ROUNDS} rounds"
    )
    ours = results["modstream, exactly-once"]
    for name, value in results.items():
        print(
            f"{name:28} {value:9,.0f} events/s   "
            f"modstream (exactly-once) / this: {ours / value:.2f}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        chosen = Settings.from_env()
        if sys.argv[1] == "aiokafka":
            asyncio.run(bare_aiokafka(chosen))
        else:
            bare_faust(chosen)
    else:
        asyncio.run(main())
