"""What one Kafka transaction costs the worker's producer (issue 13): `make bench-transactions`.

Side by side in one run on the local broker, alternating, ``ROUNDS`` rounds of ``COUNT``
back-to-back transactions, each one record and a consumer offset (what a lane commits):
aiokafka as it is, and with ``compat.retry_marker_waits_soon`` (the worker's producer),
which retries within milliseconds what the broker refuses while it still writes the last
transaction's markers. Prints the median and p90 milliseconds per transaction.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import time
import uuid

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from modstream.settings import Settings
from modstream.stream import compat
from modstream.stream.client import producer, started
from modstream.stream.pipeline import MARKER_RETRY_S
from modstream.stream.topics import delete_topics, ensure_topics

COUNT = 200
ROUNDS = 3


async def round_of(settings: Settings, patched: bool) -> list[float]:
    topic = settings.topic("decisions")
    offsets_of = TopicPartition(settings.topic("uploads"), 0)
    writer = producer(
        settings.kafka, transactional_id=f"{settings.app_id}-{uuid.uuid4().hex[:6]}", linger_ms=0
    )
    if patched:
        compat.retry_marker_waits_soon(writer, MARKER_RETRY_S)
    await started(writer)
    took = []
    try:
        for n in range(COUNT):
            began = time.perf_counter()
            async with writer.transaction():
                await (await writer.send(topic, b"decision", key=b"k", partition=n % 4))
                offset = {offsets_of: OffsetAndMetadata(n, "")}
                await writer.send_offsets_to_transaction(offset, settings.app_id)
            took.append(time.perf_counter() - began)
    finally:
        await writer.stop()
    return took


async def main() -> None:
    run = uuid.uuid4().hex[:6]
    settings = Settings.from_env(topic_prefix=f"txn-{run}.", app_id=f"txn-{run}")
    await ensure_topics(settings)
    found: dict[bool, list[float]] = {False: [], True: []}
    try:
        for _ in range(ROUNDS):
            for patched in (False, True):
                found[patched] += await round_of(settings, patched)
    finally:
        await delete_topics(settings)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, broker on the same machine; "
        f"{ROUNDS} x {COUNT} transactions each, alternating"
    )
    for patched, took in found.items():
        name = "with compat.retry_marker_waits_soon" if patched else "aiokafka as it is"
        ms = sorted(t * 1000 for t in took)
        print(
            f"{name:38} median {statistics.median(ms):5.1f} ms   "
            f"p90 {ms[int(len(ms) * 0.9)]:5.1f} ms   {len(ms) / (sum(ms) / 1000):5.0f}/s"
        )


if __name__ == "__main__":
    asyncio.run(main())
