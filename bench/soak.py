"""Memory of one worker under a steady load (issue 12): `make soak` (30 minutes; by hand).

Publishes text events (one in ten with an inline 640x480 JPEG) at a steady rate, samples the
worker's resident memory every 30 s, and prints the series and the growth after warm-up
(the first five minutes). Usage: ``python bench/soak.py [minutes] [events/s]``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).parent))
from limit import ready
from throughput import photos

from modstream.settings import Settings
from modstream.stream.topics import delete_topics, ensure_topics

RUN = uuid.uuid4().hex[:8]
ENV = {
    "MODSTREAM_TOPIC_PREFIX": f"soak{RUN}.",
    "MODSTREAM_APP_ID": f"modstream-soak-{RUN}",
    "MODSTREAM_LOG_LEVEL": "WARNING",
    "MODSTREAM_DATA_DIR": f"/tmp/modstream-soak-{RUN}",
}
SETTINGS = Settings.from_env({**os.environ, **ENV})
WARM_UP_S = 300


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def load(rate: float, until: float) -> int:
    pics = [base64.b64encode(p).decode() for p in photos(16)]
    texts = ["a quiet day at the lake", "join the caravan, glory to the martyrs", "news at ten"]
    producer = AIOKafkaProducer(**SETTINGS.kafka.options(), linger_ms=5)
    await producer.start()
    sent, started = 0, time.monotonic()
    try:
        while time.monotonic() < until:
            body: dict = {
                "schema": 1,
                "event_id": f"s{sent}",
                "platform": "soak",
                "content_id": f"c{sent}",
                "uploader_id": f"u{sent % 5000}",
                "created_at": "2026-11-30T10:00:00Z",
                "text": texts[sent % 3],
            }
            if sent % 10 == 0:
                body["media"] = [{"media_id": "m", "kind": "image", "data_b64": pics[sent % 16]}]
            await producer.send(SETTINGS.topic("uploads"), orjson.dumps(body), key=b"%d" % sent)
            sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
    finally:
        await producer.stop()
    return sent


async def main(minutes: float, rate: float) -> None:
    await ensure_topics(SETTINGS)
    log = Path(f"/tmp/modstream-soak-{RUN}.log").open("ab")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "modstream.cli", "worker"],
        env={**os.environ, **ENV},
        stdout=log,
        stderr=log,
    )
    samples: list[tuple[float, float]] = []
    try:
        await ready(SETTINGS.web_port)
        began = time.monotonic()
        sender = asyncio.ensure_future(load(rate, began + minutes * 60))
        while not sender.done():
            samples.append((time.monotonic() - began, rss_mb(worker.pid)))
            print(f"{samples[-1][0]:7.0f} s  {samples[-1][1]:7.1f} MB", flush=True)
            await asyncio.wait([sender], timeout=30)
        sent = sender.result()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        await delete_topics(SETTINGS)
    after = [mb for at, mb in samples if at >= WARM_UP_S]
    if after:
        growth = (after[-1] - after[0]) / after[0] * 100
        print(
            f"{sent:,} events at {rate:g}/s over {minutes:g} min; worker RSS after warm-up "
            f"{after[0]:.0f} -> {after[-1]:.0f} MB ({growth:+.1f}%), peak {max(after):.0f} MB"
        )


if __name__ == "__main__":
    asyncio.run(
        main(
            float(sys.argv[1]) if len(sys.argv) > 1 else 30.0,
            float(sys.argv[2]) if len(sys.argv) > 2 else 500.0,
        )
    )
