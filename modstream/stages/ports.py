"""What a stage needs from the world, as small interfaces: records in, records out, a place
to run CPU work. The Faust shell implements them over Kafka; tests implement them in memory
(``tests/stages.py``), so a stage runs in milliseconds without a broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
log = logging.getLogger("modstream.stages")


class Record(Protocol):
    """A consumed Kafka record (Faust's ``Message`` has these attributes)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> float:
        """When the record was written, in seconds since the epoch (Kafka's are in ms)."""
        ...


class Output(Protocol):
    """Where a stage's records go. Topic names are logical (``contracts.DECISIONS_TOPIC``); the
    implementation adds the configured prefix."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> asyncio.Future[Any]:
        """Hand a record to the producer; the future completes when Kafka has it."""
        ...

    async def dead_letter(self, record: Record, error: str, reason: str, stage: str) -> None:
        """The record, whole, with why it could not be processed."""
        ...


class Runner(Protocol):
    """Runs CPU-bound work off the event loop (the hashing process pool)."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...


async def guarded(
    stage: str,
    process: Callable[[Sequence[Record]], Awaitable[None]],
    records: Sequence[Record],
    out: Output,
) -> None:
    """Run a stage on a batch; if it fails unexpectedly (a bug, not bad input), run it again
    on each record alone, so that only the records that fail by themselves go to the
    dead-letter topic with the error and their neighbours are decided as usual; the stream
    goes on instead of the agent crashing with records taken but not processed.

    ``process`` must be all or nothing: what it produced before it raised is dropped (the
    lanes' ``_all_or_nothing``), so that a retried record is not written twice."""
    try:
        await process(records)
        return
    except Exception as exc:
        if len(records) == 1:
            await _failed(stage, records[0], exc, out)
            return
        log.error(
            "%s stage failed on a batch of %d: retrying its records one by one",
            stage,
            len(records),
            exc_info=exc,
        )
    for record in records:
        try:
            await process([record])
        except Exception as exc:
            await _failed(stage, record, exc, out)


async def _failed(stage: str, record: Record, exc: Exception, out: Output) -> None:
    log.error("%s stage failed on a record", stage, exc_info=exc)
    await out.dead_letter(record, f"internal error: {exc!r}", "internal_error", stage)


def watch(deliveries: Sequence[asyncio.Future[Any]]) -> None:
    """At-least-once without waiting per batch: the shell flushes the producer before it
    commits any offset, so a record handed to the producer is in Kafka before the event that
    produced it counts as done. A send that fails is logged (once per future: records of
    one batch may share one)."""
    for delivery in {id(d): d for d in deliveries}.values():
        delivery.add_done_callback(_report_failed_send)


def _report_failed_send(delivery: asyncio.Future[Any]) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        log.error("producing a record failed", exc_info=delivery.exception())
