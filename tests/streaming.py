"""Helpers for tests that publish to and read from the real broker."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from aiohttp import web

from modstream.stream.client import publish, read_topic
from modstream.stream.output import key_partitioner


async def collect(
    workers, topic: str, want: set[str], start=None, timeout=60.0, copies: dict | None = None
) -> dict[str, list]:
    """Decisions (or other records keyed by event id) until every id in ``want`` is seen (ids
    in ``copies`` that many times: one event id used by several platforms)."""
    copies = copies or {}
    seen: dict[str, list] = {}
    deadline = time.monotonic() + timeout
    async for key, value in read_topic(
        workers.settings.kafka, workers.settings.topic(topic), start=start, timeout_s=timeout
    ):
        record = orjson.loads(value)
        seen.setdefault(record.get("event_id", key.decode() if key else ""), []).append(record)
        enough = all(len(seen.get(i, ())) >= copies.get(i, 1) for i in want)
        if enough or time.monotonic() > deadline:
            break
    return seen


async def dead_letters(workers, count: int, timeout: float = 30.0) -> list[dict]:
    """The first ``count`` records of the dead-letter topic (waiting up to ``timeout`` for
    each)."""
    return [
        orjson.loads(value)
        async for _, value in read_topic(
            workers.settings.kafka,
            workers.settings.topic("uploads.dlq"),
            max_records=count,
            timeout_s=timeout,
        )
    ]


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
