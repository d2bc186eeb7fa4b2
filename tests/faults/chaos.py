"""The fault suite's tools: a steady load of upload events, a reader that notes when each
decision became visible to a ``read_committed`` consumer (and, settled, reads on to the
topic's committed end so that a late duplicate is counted), and the figures of a scenario."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from streaming import read_to_committed_end, send, upload

from modstream.stream.client import assign_from, committed_reader, started

#: Where the figures of every scenario are appended (one JSON line each), if set.
REPORT = os.environ.get("MODSTREAM_FAULT_REPORT")


@dataclass
class Figures:
    scenario: str
    produced: int
    decided: int = 0
    lost: int = 0
    duplicate_records: int = 0
    unexpected_ids: int = 0
    settled: bool = False
    extra: dict = field(default_factory=dict)

    def report(self) -> None:
        line = json.dumps(asdict(self))
        print(line)
        if REPORT:
            with Path(REPORT).open("a") as out:
                out.write(line + "\n")


class Decisions:
    """Every record of a topic as ``read_committed`` consumers see it, with its arrival time."""

    def __init__(self, workers, topic: str = "decisions") -> None:
        self.workers = workers
        self.topic = workers.settings.topic(topic)
        self.arrivals: dict[str, list[float]] = {}
        self.records: dict[str, list[dict]] = {}
        self.offsets: dict[str, list[tuple[int, int]]] = {}
        self.settling_since = float("inf")
        self._client: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Decisions:
        self._client = await started(committed_reader(self.workers.settings.kafka))
        await assign_from(self._client, self.topic)
        self._task = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._task is not None and self._client is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._client.stop()

    async def _read(self) -> None:
        assert self._client is not None
        while True:
            batches = await self._client.getmany(timeout_ms=100)
            for records in batches.values():
                for record in records:
                    self._take(record)
            if batches:
                self._changed.set()

    def _take(self, record: ConsumerRecord) -> None:
        body = orjson.loads(record.value or b"{}")
        event_id = body.get("event_id") or (record.key.decode() if record.key else "")
        self.arrivals.setdefault(event_id, []).append(time.monotonic())
        self.records.setdefault(event_id, []).append(body)
        self.offsets.setdefault(event_id, []).append((record.partition, record.offset))

    async def settle(self) -> None:
        """Stop following the topic and read it to its committed end as of now, plus a drain:
        called once the workers have stopped, every record they committed is counted, a
        duplicate that landed after the last first sighting too."""
        assert self._task is not None and self._client is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.settling_since = time.monotonic()
        await read_to_committed_end(self._client, list(self._client.assignment()), self._take)
        self.settled = True

    async def until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
        return True

    async def all_of(self, ids: list[str], timeout: float) -> bool:
        return await self.until(lambda: all(i in self.arrivals for i in ids), timeout)

    def figures(self, scenario: str, ids: list[str], others: Sequence[str] = ()) -> Figures:
        """The counts over ``ids``; ``others`` are ids the scenario also sent (a warm-up),
        any other id on the topic is unexpected."""
        decided = [i for i in ids if i in self.arrivals]
        return Figures(
            scenario,
            produced=len(ids),
            decided=len(decided),
            lost=len(ids) - len(decided),
            duplicate_records=sum(len(self.arrivals[i]) - 1 for i in decided),
            unexpected_ids=len(set(self.arrivals) - set(ids) - set(others)),
            settled=self.settled,
        )

    def doubled(self, limit: int = 5) -> dict[str, list]:
        """Some ids seen more than once, with where each copy was (partition, offset), its
        ``decision_id`` and whether the settling read found it: what a duplicate is."""
        found = {}
        for event_id, where in self.offsets.items():
            if len(where) > 1 and len(found) < limit:
                ids = [r.get("decision_id") for r in self.records[event_id]]
                late = [t >= self.settling_since for t in self.arrivals[event_id]]
                found[event_id] = list(zip(where, ids, late, strict=True))
        return found

    def longest_pause(self, since: float, until: float) -> float:
        """The longest time in [since, until] with no new decision."""
        times = sorted(t for ts in self.arrivals.values() for t in ts if since <= t <= until)
        edges = [since, *times, until]
        return max(b - a for a, b in itertools.pairwise(edges))


async def steady(
    workers,
    ids: list[str],
    rate: float,
    make: Callable[[int, str], tuple[bytes, bytes]] | None = None,
) -> dict[str, float]:
    """Publish ``ids`` at about ``rate`` events/s; returns when each was sent."""
    make = make or (lambda n, i: upload(i, text=TEXTS[n % 2], uploader=f"u{n % 101}"))
    sent: dict[str, float] = {}
    chunk = max(1, int(rate / 20))
    for start in range(0, len(ids), chunk):
        began = time.monotonic()
        part = ids[start : start + chunk]
        await send(workers, "uploads", [make(start + n, i) for n, i in enumerate(part)])
        now = time.monotonic()
        sent.update(dict.fromkeys(part, now))
        await asyncio.sleep(max(0.0, chunk / rate - (now - began)))
    return sent


TEXTS = [
    "the soldiers of the caliphate will remain and expand",  # banked: takedown
    "a quiet day at the lake",
]


@contextlib.asynccontextmanager
async def running(coro) -> AsyncIterator[asyncio.Task]:
    task = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")
