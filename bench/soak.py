"""Memory of one worker under a steady load (issues 12, 24): `make soak` (30 minutes; by hand).

Publishes text events (one in ten with an inline 640x480 JPEG) at a steady rate, samples
the resident memory of the worker and of its hashing processes every 30 s, and prints the
series and the growth after warm-up. Then reads ``decisions`` to its end and checks that
every event was decided exactly once.

Usage: ``python bench/soak.py [minutes] [events/s] [--uploaders N] [--warm-up S]
[--repeat-window S]``; ``--uploaders 0`` (the default) gives every event a new uploader, as
a platform with millions of them would. One event in three is a takedown of a banked text
(a strike for its uploader, a case on ``review.cases``); flood quarantine is off.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).parent))
from limit import ready
from throughput import photos

from modstream.contracts import DECISIONS_TOPIC, HASHBANK_TOPIC, BankEntry, dumps
from modstream.settings import Settings
from modstream.stream import client
from modstream.stream.topics import delete_topics, ensure_topics

RUN = uuid.uuid4().hex[:8]
ENV = {
    "MODSTREAM_TOPIC_PREFIX": f"soak{RUN}.",
    "MODSTREAM_APP_ID": f"modstream-soak-{RUN}",
    "MODSTREAM_LOG_LEVEL": "WARNING",
    "MODSTREAM_DATA_DIR": f"/tmp/modstream-soak-{RUN}",
    "MODSTREAM_FLOOD_MIN_MATCHES": "0",  # one entry matching 100 times a second, on purpose
}
#: In the bank as a takedown: one event in three strikes its uploader (and opens a case).
KNOWN = "the soldiers of the caliphate will remain and expand"
DRAIN_S = 180.0  # after the load: every event decided within this


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def children(pid: int) -> list[int]:
    """The process's descendants (its hashing processes and their helpers)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *children(int(child))]
    return found


def hashing_mb(pid: int) -> float:
    total = 0.0
    for child in children(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # replaced meanwhile
            total += rss_mb(child)
    return total


async def load(settings: Settings, rate: float, until: float, uploaders: int) -> int:
    pics = [base64.b64encode(p).decode() for p in photos(16)]
    texts = ["a quiet day at the lake", KNOWN, "news at ten"]
    producer = AIOKafkaProducer(**settings.kafka.options(), linger_ms=5)
    await producer.start()
    sent, started = 0, time.monotonic()
    try:
        while time.monotonic() < until:
            body: dict = {
                "schema": 1,
                "event_id": f"s{sent}",
                "platform": "soak",
                "content_id": f"c{sent}",
                "uploader_id": f"u{sent % uploaders if uploaders else sent}",
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "text": texts[sent % 3],
            }
            if sent % 10 == 0:
                body["media"] = [{"media_id": "m", "kind": "image", "data_b64": pics[sent % 16]}]
            await producer.send(settings.topic("uploads"), orjson.dumps(body), key=b"%d" % sent)
            sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
    finally:
        await producer.stop()
    return sent


async def decided_once(settings: Settings, sent: int) -> tuple[int, int, int]:
    """Events decided, events decided more than once, events missing: ``decisions`` read
    to its end (committed records only), again until every event is there or DRAIN_S."""
    deadline = time.monotonic() + DRAIN_S
    while True:
        counts: collections.Counter[bytes] = collections.Counter()
        await client.scan_table(
            settings.kafka,
            settings.topic(DECISIONS_TOPIC),
            lambda partition, key, value, counts=counts: counts.update((key,)),
        )
        wanted = {b"s%d" % n for n in range(sent)}
        missing = len(wanted - counts.keys())
        if not missing or time.monotonic() > deadline:
            doubled = sum(1 for key, n in counts.items() if n > 1)
            return len(counts), doubled, missing
        await asyncio.sleep(5)


def verdicts(port: int) -> str:
    """The worker's decisions by verdict (how many struck), from its metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        lines = page.read().decode().splitlines()
    wanted = "modstream_decisions_total{"
    counted = [line[len(wanted) :] for line in lines if line.startswith(wanted)]
    return "decisions: " + ", ".join(counted)


async def main(args: argparse.Namespace) -> None:
    env = {**os.environ, **ENV, "MODSTREAM_REPEAT_WINDOW_S": str(args.repeat_window)}
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    entry = BankEntry("tve", "statement-1", "text", KNOWN, (), "takedown", "")
    banked = [(entry.key.encode(), dumps(entry))]
    await client.publish(settings.kafka, settings.topic(HASHBANK_TOPIC), banked)
    log = Path(f"/tmp/modstream-soak-{RUN}.log").open("ab")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "modstream.cli", "worker"], env=env, stdout=log, stderr=log
    )
    samples: list[tuple[float, float, float]] = []
    try:
        await ready(settings.web_port)
        began = time.monotonic()
        until = began + args.minutes * 60
        sender = asyncio.ensure_future(load(settings, args.rate, until, args.uploaders))
        while not sender.done():
            samples.append((time.monotonic() - began, rss_mb(worker.pid), hashing_mb(worker.pid)))
            at, mb, hashing = samples[-1]
            print(f"{at:7.0f} s  worker {mb:7.1f} MB  hashing {hashing:7.1f} MB", flush=True)
            await asyncio.wait([sender], timeout=30)
        sent = sender.result()
        decided, doubled, missing = await decided_once(settings, sent)
        print(verdicts(settings.web_port))
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        await delete_topics(settings)
    print(f"{sent:,} events: {decided:,} decided, {doubled} more than once, {missing} missing")
    after = [(mb, hashing) for at, mb, hashing in samples if at >= args.warm_up]
    if after:
        for name, series in (("worker", [a[0] for a in after]), ("hashing", [a[1] for a in after])):
            growth = (series[-1] - series[0]) / series[0] * 100
            print(
                f"{name} RSS after {args.warm_up:g} s of warm-up: {series[0]:.0f} -> "
                f"{series[-1]:.0f} MB ({growth:+.1f}%), peak {max(series):.0f} MB"
            )
    uploaders = f"{args.uploaders:,} uploaders" if args.uploaders else "a new uploader each"
    print(f"{args.rate:g} events/s over {args.minutes:g} min, {uploaders}")
    if doubled or missing:
        sys.exit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("minutes", type=float, nargs="?", default=30.0)
    parser.add_argument("rate", type=float, nargs="?", default=500.0)
    parser.add_argument("--uploaders", type=int, default=0, help="0: a new uploader per event")
    parser.add_argument("--warm-up", type=float, default=300.0, help="seconds not counted")
    parser.add_argument(
        "--repeat-window", type=int, default=24 * 3600, help="MODSTREAM_REPEAT_WINDOW_S"
    )
    asyncio.run(main(parser.parse_args()))
