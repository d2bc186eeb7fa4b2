"""Helpers for tests that publish to and read from the real broker."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from modstream.stream.client import assign_from, committed_reader, publish, started
from modstream.stream.output import key_partitioner

T = TypeVar("T")

#: How long a drained reader keeps reading after the committed end with nothing new.
DRAIN_S = 1.0


@dataclass
class Sightings:
    """Every record read, by event id: what a reader needs to tell lost, doubled and
    unexpected records apart (a reader that stops at the first sighting of each id can only
    ever find losses)."""

    records: dict[str, list[dict]] = field(default_factory=dict)

    def add(self, key: bytes | None, value: bytes | None) -> None:
        record = orjson.loads(value) if value is not None else {}
        event_id = record.get("event_id") or (key.decode() if key else "")
        self.records.setdefault(event_id, []).append(record)

    def take(self, record: ConsumerRecord) -> None:
        self.add(record.key, record.value)

    def count(self, event_id: str) -> int:
        return len(self.records.get(event_id, ()))

    def complete(self, want: Iterable[str], copies: dict[str, int]) -> bool:
        return all(self.count(i) >= copies.get(i, 1) for i in want)

    def lost(self, want: Iterable[str], copies: dict[str, int] | None = None) -> list[str]:
        copies = copies or {}
        return sorted(i for i in want if self.count(i) < copies.get(i, 1))

    def duplicates(self, want: Iterable[str], copies: dict[str, int] | None = None) -> dict:
        """Ids of ``want`` seen more often than expected, with how often they were seen."""
        copies = copies or {}
        return {i: self.count(i) for i in want if self.count(i) > copies.get(i, 1)}

    def unexpected(self, want: Iterable[str]) -> list[str]:
        return sorted(set(self.records) - set(want))


async def read_to_committed_end(
    reader: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    take: Callable[[ConsumerRecord], None],
    drain_s: float = DRAIN_S,
    timeout: float = 60.0,
) -> None:
    """Read on until ``reader`` stands at every partition's committed end as of now (the last
    stable offset: a ``read_committed`` reader's end offsets), then ``drain_s`` more with
    nothing new; every record goes to ``take``. Raises if the end is not reached in
    ``timeout``: a reader that cannot get there cannot say there are no duplicates."""
    ends = await reader.end_offsets(partitions)
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    while True:
        at_end = all([await reader.position(tp) >= ends[tp] for tp in partitions])
        if at_end and time.monotonic() - quiet_since >= drain_s:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"never reached the committed end {ends} in {timeout:g} s")
        batches = await reader.getmany(*partitions, timeout_ms=200)
        for records in batches.values():
            for record in records:
                take(record)
        if any(batches.values()):
            quiet_since = time.monotonic()


async def read_all(
    workers,
    topic: str,
    want: set[str],
    start: dict[int, int] | None = None,
    timeout: float = 60.0,
    copies: dict[str, int] | None = None,
    drain_s: float = DRAIN_S,
) -> Sightings:
    """Every committed record of ``topic`` (from ``start`` offsets, else the beginning) until
    each id in ``want`` has been seen (ids in ``copies`` that many times), then on to the
    topic's committed end and ``drain_s`` past it: a duplicate that lands after the last
    first sighting is counted too. Gives up waiting for ``want`` after ``timeout``."""
    copies = copies or {}
    seen = Sightings()
    await _read_drained(
        workers, topic, start, lambda: seen.complete(want, copies), seen.take, timeout, drain_s
    )
    return seen


async def _read_drained(
    workers,
    topic: str,
    start: dict[int, int] | None,
    enough: Callable[[], bool],
    take: Callable[[ConsumerRecord], None],
    timeout: float,
    drain_s: float = DRAIN_S,
) -> None:
    """Every committed record of ``topic`` to ``take``, until ``enough`` (or ``timeout``),
    then on to the committed end (``read_to_committed_end``)."""
    reader = await started(committed_reader(workers.settings.kafka))
    try:
        partitions = await assign_from(reader, workers.settings.topic(topic), start)
        deadline = time.monotonic() + timeout
        while not enough() and time.monotonic() < deadline:
            for records in (await reader.getmany(*partitions, timeout_ms=200)).values():
                for record in records:
                    take(record)
        await read_to_committed_end(reader, partitions, take, drain_s)
    finally:
        await reader.stop()


async def collect(
    workers,
    topic: str,
    want: set[str],
    start: dict[int, int] | None = None,
    timeout: float = 60.0,
    copies: dict[str, int] | None = None,
) -> dict[str, list]:
    """Decisions (or other records keyed by event id) by id, read as ``read_all`` reads them
    (to the committed end, duplicates included); ids in ``copies`` are awaited that many
    times (one event id used by several platforms, or decided again by a person)."""
    return (await read_all(workers, topic, want, start, timeout, copies)).records


async def dead_letters(workers, count: int, timeout: float = 30.0) -> list[dict]:
    """Every record of the dead-letter topic, once at least ``count`` are there (waiting up
    to ``timeout``), read to its committed end: more than ``count`` shows as more."""
    letters: list[dict] = []

    def take(record: ConsumerRecord) -> None:
        letters.append(orjson.loads(record.value or b"{}"))

    await _read_drained(workers, "uploads.dlq", None, lambda: len(letters) >= count, take, timeout)
    return letters


async def eventually(
    check: Callable[[], T | Awaitable[T]], timeout: float = 30.0, what: str = "the condition"
) -> T:
    """The first truthy answer of ``check`` (a function or coroutine function), asked with a
    backoff from 0.1 s to 1 s: a positive assertion about something that becomes true a
    moment later, without a fixed sleep. Fails after ``timeout`` with the last answer."""
    deadline = time.monotonic() + timeout
    pause = 0.1
    while True:
        answer = check()
        if inspect.isawaitable(answer):
            answer = await answer
        if answer:
            return answer  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not true within {timeout:g} s; last: {answer!r}")
        await asyncio.sleep(pause)
        pause = min(1.0, pause * 2)


def wait_until(check: Callable[[], T], timeout: float = 30.0, what: str = "the condition") -> T:
    """``eventually`` for tests without an event loop."""
    deadline = time.monotonic() + timeout
    pause = 0.1
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not true within {timeout:g} s; last: {answer!r}")
        time.sleep(pause)
        pause = min(1.0, pause * 2)


async def send(workers, topic: str, records) -> None:
    await publish(workers.settings.kafka, workers.settings.topic(topic), records)


def upload(event_id: str, *, text=None, media=None, uploader="u1") -> tuple[bytes, bytes]:
    body = {
        "schema": 1,
        "event_id": event_id,
        "platform": "test",
        "content_id": f"c-{event_id}",
        "uploader_id": uploader,
        "created_at": "2026-11-26T10:00:00Z",
    }
    if text is not None:
        body["text"] = text
    if media is not None:
        body["media"] = media
    return body["content_id"].encode(), orjson.dumps(body)


def uploaders_on_each_partition(partitions: int, per_partition: int = 1) -> list[str]:
    """Uploader ids of the test platform, ``per_partition`` on each partition of
    uploads.hashed (Kafka's default partitioner, as the hash stage routes them), partition
    by partition: their events are decided there."""
    partition_of = key_partitioner(partitions)
    found: dict[int, list[str]] = {p: [] for p in range(partitions)}
    for n in range(1000):
        picked = found[partition_of(f"test/u{n}")]
        if len(picked) < per_partition:
            picked.append(f"u{n}")
    return [uploader for p in range(partitions) for uploader in found[p]]


def inline(data: bytes) -> list[dict]:
    return [{"media_id": "m1", "kind": "image", "data_b64": base64.b64encode(data).decode()}]


@contextlib.asynccontextmanager
async def http_server(
    routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]],
    host: str = "127.0.0.1",
) -> AsyncIterator[str]:
    """A real HTTP server on a loopback address serving GET ``routes`` (path: handler), for
    media URLs; yields its base URL and stops when the block ends."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    try:
        yield f"http://{host}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
