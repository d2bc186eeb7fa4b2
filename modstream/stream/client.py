"""Plain aiokafka helpers for the CLI, tests and benchmarks: publish records, read a topic.

Each takes the process's ``KafkaAccess`` (address, TLS, SASL), and a client that fails to
start is closed before the error goes up (no "unclosed client" noise after a clear error).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from modstream.settings import KafkaAccess
from modstream.stream.compat import refresh_metadata

Client = TypeVar("Client", AIOKafkaConsumer, AIOKafkaProducer)


async def started(client: Client) -> Client:
    """``client`` started, or stopped again if it could not start (bad address, bad
    credentials) so that only the error remains."""
    try:
        await client.start()
    except BaseException:
        await client.stop()
        raise
    return client


def consumer(kafka: KafkaAccess, **options: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(**kafka.options(), **options)


def producer(kafka: KafkaAccess, **options: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(**kafka.options(), **options)


def committed_reader(kafka: KafkaAccess) -> AIOKafkaConsumer:
    """A consumer of committed records only, outside any group. The broker holds a fetch
    that finds nothing committed yet for ``fetch_max_wait_ms`` (500 ms by default, most of a
    latency budget when records are written in transactions): 50 ms here."""
    return consumer(
        kafka,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=50,
    )


class MissingTopicError(LookupError):
    """The topic does not exist (or did not appear in time)."""


async def publish(
    kafka: KafkaAccess,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    progress: Callable[[int], None] | None = None,
    window: int = 10_000,
) -> int:
    """Send ``(key, value)`` pairs (value None is a tombstone) and wait until all are acked.
    ``records`` may be a generator of millions: at most ``window`` are in flight, and
    ``progress`` hears the count acked so far after each window."""
    client = await started(
        producer(kafka, linger_ms=5, acks="all", max_request_size=8 * 1024 * 1024)
    )
    try:
        sent, pending = 0, []
        for key, value in records:
            pending.append(await client.send(topic, key=key, value=value))
            if len(pending) >= window:
                await asyncio.gather(*pending)
                sent, pending = sent + len(pending), []
                if progress is not None:
                    progress(sent)
        await asyncio.gather(*pending)
        return sent + len(pending)
    finally:
        await client.stop()


async def topic_partitions(
    consumer: AIOKafkaConsumer, topic: str, wait_s: float = 10.0
) -> list[TopicPartition]:
    """Every partition of ``topic``, waiting up to ``wait_s`` for a just-created topic."""
    deadline = time.monotonic() + wait_s
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        if time.monotonic() > deadline:
            raise MissingTopicError(f"topic {topic!r} does not exist")
        await refresh_metadata(consumer)
        await asyncio.sleep(0.1)


async def read_partition(
    kafka: KafkaAccess, tp: TopicPartition, start: int = 0, timeout_s: float = 50.0
) -> AsyncIterator[tuple[int, bytes, bytes | None]]:
    """The committed keyed records of one partition, from ``start`` to at least the end it
    has when called, as ``(offset, key, value)`` (None for a tombstone): how a worker restores the
    state it keeps for a partition. Raises TimeoutError after ``timeout_s`` (keep it within
    the group's rebalance timeout)."""
    async for record in partition_records(kafka, tp, start, timeout_s):
        assert record.key is not None
        yield record.offset, record.key, record.value


async def partition_records(
    kafka: KafkaAccess, tp: TopicPartition, start: int = 0, timeout_s: float = 50.0
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """``read_partition``'s records whole (their timestamps too)."""
    reader = await started(committed_reader(kafka))
    try:
        reader.assign([tp])
        reader.seek(tp, start)
        end = (await reader.end_offsets([tp]))[tp]
        deadline = time.monotonic() + timeout_s
        while await reader.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {tp.topic}:{tp.partition} took over {timeout_s:g} s")
            for record in (await reader.getmany(tp, timeout_ms=200)).get(tp, ()):
                if record.key is not None:
                    yield record
            await asyncio.sleep(0)
    finally:
        await reader.stop()


async def read_table(
    kafka: KafkaAccess,
    topic: str,
    timeout_s: float = 120.0,
    keep: Callable[[bytes], bool] | None = None,
) -> dict[tuple[int, bytes], bytes]:
    """A compacted topic's latest committed value per ``(partition, key)``, read to the end
    offsets it had when called (tombstones remove keys; records without a key are skipped,
    and so are keys ``keep`` refuses: a large topic read for a few of its keys)."""
    table: dict[tuple[int, bytes], bytes] = {}

    def apply(partition: int, key: bytes, value: bytes | None) -> None:
        if value is None:
            table.pop((partition, key), None)
        else:
            table[(partition, key)] = value

    await scan_table(kafka, topic, apply, timeout_s, keep)
    return table


async def scan_table(
    kafka: KafkaAccess,
    topic: str,
    apply: Callable[[int, bytes, bytes | None], None],
    timeout_s: float = 120.0,
    keep: Callable[[bytes], bool] | None = None,
) -> None:
    """Every committed keyed record of a topic in order, to the end offsets it had when
    called, handed to ``apply(partition, key, value)`` without holding them: how state
    larger than a table in memory is rebuilt from a compacted topic."""
    client = await started(committed_reader(kafka))
    try:
        partitions = await assign_from(client, topic)
        ends = await client.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        pending = {tp for tp, end in ends.items() if end > 0}
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took over {timeout_s:g} s")
            for tp, records in (await client.getmany(*pending, timeout_ms=200)).items():
                for record in records:
                    if record.key is None or (keep is not None and not keep(record.key)):
                        continue
                    apply(tp.partition, record.key, record.value)
            pending = {tp for tp in pending if await client.position(tp) < ends[tp]}
    finally:
        await client.stop()


async def end_offsets(kafka: KafkaAccess, topic: str) -> dict[int, int]:
    client = await started(consumer(kafka, group_id=None))
    try:
        partitions = await topic_partitions(client, topic)
        return {tp.partition: off for tp, off in (await client.end_offsets(partitions)).items()}
    finally:
        await client.stop()


async def assign_from(
    consumer: AIOKafkaConsumer, topic: str, start: dict[int, int] | None = None
) -> list[TopicPartition]:
    """Assign every partition of ``topic`` to ``consumer``, each at its ``start`` offset (by
    partition number), else at its beginning."""
    partitions = await topic_partitions(consumer, topic)
    consumer.assign(partitions)
    for tp in partitions:
        if start and tp.partition in start:
            consumer.seek(tp, start[tp.partition])
        else:
            await consumer.seek_to_beginning(tp)
    return partitions


async def read_topic(
    kafka: KafkaAccess,
    topic: str,
    *,
    start: dict[int, int] | None = None,
    max_records: int | None = None,
    timeout_s: float | None = None,
) -> AsyncIterator[tuple[bytes | None, bytes | None]]:
    """Yield ``(key, value)`` from every partition: from ``start`` offsets, else the beginning.
    Only committed records, as every consumer of the pipeline's topics should read them
    (``isolation_level=read_committed``: the pipeline writes in transactions).

    Stops after ``max_records``, or once ``timeout_s`` passes with no new record.
    """
    client = await started(committed_reader(kafka))
    try:
        await assign_from(client, topic, start)
        seen, last = 0, time.monotonic()
        while True:
            batches = await client.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    yield record.key, record.value
                    seen += 1
                    last = time.monotonic()
                    if max_records is not None and seen >= max_records:
                        return
            if timeout_s is not None and time.monotonic() - last > timeout_s:
                return
    finally:
        await client.stop()
