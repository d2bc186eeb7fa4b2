"""Review cases for the partitions of ``review.outcomes.routed`` this worker owns: the
matching partitions of the compacted ``review.cases``, on disk (sqlite in the worker's data
dir), fed by one long-lived reader.

The decide stages of every worker write cases into these partitions (by decision id), so the
store cannot just restore once: one consumer, started with the store, tails every owned
partition for as long as it is owned. A case is committed in the same transaction as the
decision a reviewer sees, so an outcome can never arrive before its case is readable: when
an outcome names a decision the store does not hold, the store asks the broker where the
partition's committed records end (one request, no new consumer) and waits, bounded, until
the reader has applied that far. An id that names no case costs that request, not a read.

Holding cases in memory cost a few KB per review decision for 90 days (issue 24): on disk,
the worker's memory is sqlite's page cache (``CACHE_KIB``) whatever the number of cases. The
file is a cache of the topic, rebuilt when a partition is taken over, never a source.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from modstream.contracts import REVIEW_CASES_TOPIC
from modstream.settings import Settings
from modstream.stages.metrics import PipelineMetrics
from modstream.stream import client
from modstream.stream.pipeline import PipelineOutput

log = logging.getLogger("modstream.stream")
T = TypeVar("T")
RESTORE_TIMEOUT_S = 50.0  # within the rebalance timeout
CATCH_UP_TIMEOUT_S = 10.0  # a case committed before its outcome is read within this
MAX_RECORDS_PER_READ = 500  # a few KB each: what one read holds in memory at most
CACHE_KIB = 8 * 1024  # sqlite's page cache: the store's memory, however many cases
MAX_BACKOFF_S = 1.0
#: Keys only the review stage of the partition's owner writes: the store has their latest
#: value from the restore on, so the reader never replaces one (with an older committed
#: value, or while this batch's newer one is not committed yet).
OWN_KEYS = ("applied:", "entry:")


class CaseTable:
    """The latest value per ``(partition, key)`` in one sqlite file (blocking calls: the store
    runs them on its own thread). Not durable on purpose: it is rebuilt from Kafka."""

    def __init__(self, path: Path, cache_kib: int = CACHE_KIB) -> None:
        path.unlink(missing_ok=True)  # whatever a former run left is rebuilt on takeover
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{cache_kib}"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute(
            "CREATE TABLE cases (partition INTEGER, key TEXT, value BLOB,"
            " PRIMARY KEY (partition, key))"
        )

    def get(self, partition: int, key: str) -> bytes | None:
        row = self._db.execute(
            "SELECT value FROM cases WHERE partition = ? AND key = ?", (partition, key)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def apply(self, rows: Sequence[tuple[int, str, bytes | None]]) -> None:
        """Write ``(partition, key, value)`` in order, in one transaction (None deletes)."""
        with self._db:
            self._db.execute("BEGIN")
            for partition, key, value in rows:
                if value is None:
                    self._db.execute(
                        "DELETE FROM cases WHERE partition = ? AND key = ?", (partition, key)
                    )
                else:
                    self._db.execute(
                        "INSERT OR REPLACE INTO cases VALUES (?, ?, ?)", (partition, key, value)
                    )

    def drop(self, partition: int) -> None:
        self._db.execute("DELETE FROM cases WHERE partition = ?", (partition,))

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM cases").fetchone()[0])

    def close(self) -> None:
        self._db.close()


class CaseStore:
    """``stages.review.Cases`` over Kafka, on disk. Values stay as the record bytes (parsed
    when an outcome needs them): a case is a few KB and most are never reviewed."""

    def __init__(
        self,
        settings: Settings,
        output: PipelineOutput,
        path: Path,
        metrics: PipelineMetrics,
        cache_kib: int = CACHE_KIB,
    ) -> None:
        self.settings = settings
        self.output = output
        self.metrics = metrics
        self.topic = settings.topic(REVIEW_CASES_TOPIC)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="case-store")  # in order
        self._table = CaseTable(path, cache_kib)
        self._reader: AIOKafkaConsumer | None = None
        self._tailing: asyncio.Task[None] | None = None
        self._next: dict[int, int] = {}  # owned partition -> next offset to read
        self._applied: dict[int, int] = {}  # owned partition -> offset applied up to
        self._restore_end: dict[int, int] = {}  # before it, the owner's own keys are read too
        self._progress = asyncio.Condition()  # the reader applied more
        self._owned_changed = asyncio.Event()
        self._epoch = 0  # the owned partitions' version: a read across a change is dropped

    async def get(self, key: str, partition: int) -> bytes | None:
        found = await self._run(self._table.get, partition, key)
        if found is None and not key.startswith(OWN_KEYS):
            await self._caught_up(partition)  # a case written since the reader last read
            found = await self._run(self._table.get, partition, key)
        return found

    async def put(self, key: str, value: bytes, partition: int) -> asyncio.Future[Any]:
        await self._run(self._table.apply, [(partition, key, value)])
        return await self.output.send(REVIEW_CASES_TOPIC, key.encode(), value, partition)

    async def restore(self, partition: int) -> None:
        """Called when the partition is assigned: the reader reads it from the beginning,
        and this returns once it has applied what the partition held then."""
        reader = await self._started()
        self.forget(partition)
        tp = TopicPartition(self.topic, partition)
        end = (await reader.end_offsets([tp]))[tp]
        self._next[partition], self._applied[partition] = 0, 0
        self._restore_end[partition] = end
        self._reassign()
        await self._wait_applied(partition, end, RESTORE_TIMEOUT_S)

    def forget(self, partition: int) -> None:
        if partition not in self._next:
            return
        for owned in (self._next, self._applied, self._restore_end):
            owned.pop(partition, None)
        self._reassign()
        self._thread.submit(self._table.drop, partition)  # before any later write: one thread

    async def close(self) -> None:
        if self._tailing is not None:
            self._tailing.cancel()
            await asyncio.gather(self._tailing, return_exceptions=True)
        if self._reader is not None:
            await self._reader.stop()
        await self._run(self._table.close)
        self._thread.shutdown()

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def _started(self) -> AIOKafkaConsumer:
        if self._reader is None:
            self._reader = await client.started(client.committed_reader(self.settings.kafka))
            self.metrics.case_readers_started.inc()
            self._tailing = asyncio.ensure_future(self._tail(self._reader))
        return self._reader

    def _reassign(self) -> None:
        if self._reader is None:
            return
        self._epoch += 1
        self._reader.assign([TopicPartition(self.topic, p) for p in self._next])
        self._seek_applied()
        self._owned_changed.set()

    def _seek_applied(self) -> None:
        """The reader back to where the store has applied each owned partition."""
        assert self._reader is not None
        for partition, offset in self._next.items():
            self._reader.seek(TopicPartition(self.topic, partition), offset)

    async def _caught_up(self, partition: int) -> None:
        """Wait until the reader has applied every record the partition had committed when
        asked: one ListOffsets request, however many ids name no case."""
        if partition not in self._next or self._reader is None:
            return
        if self._tailing is not None and self._tailing.done():  # a bug: say so, do not wait
            raise RuntimeError("the review-case reader has stopped")
        tp = TopicPartition(self.topic, partition)
        end = (await self._reader.end_offsets([tp]))[tp]
        self.metrics.case_catch_ups.inc()
        await self._wait_applied(partition, end, CATCH_UP_TIMEOUT_S)

    async def _wait_applied(self, partition: int, end: int, timeout_s: float) -> None:
        def reached() -> bool:
            return partition not in self._applied or self._applied[partition] >= end

        try:
            async with asyncio.timeout(timeout_s), self._progress:
                await self._progress.wait_for(reached)
        except TimeoutError:
            raise TimeoutError(
                f"reading {self.topic}:{partition} to {end} took over {timeout_s:g} s"
            ) from None

    async def _tail(self, reader: AIOKafkaConsumer) -> None:
        """Read every owned partition for as long as it is owned, writing what it reads. A
        read during which the owned partitions changed is dropped and read again (the
        reader was sent back to where the store had applied)."""
        backoff, epoch = 0.1, self._epoch
        while True:
            if not self._next:
                self._owned_changed.clear()
                await self._owned_changed.wait()
                continue
            if epoch != self._epoch:  # what the last read took was dropped: read it again
                self._seek_applied()
            epoch = self._epoch
            try:
                batches = await reader.getmany(timeout_ms=200, max_records=MAX_RECORDS_PER_READ)
                if epoch != self._epoch:
                    continue
                rows, reached = self._rows(batches)
                for partition in reached:  # past transaction markers too
                    position = await reader.position(TopicPartition(self.topic, partition))
                    if epoch != self._epoch:
                        break
                    reached[partition] = max(reached[partition], position)
                if epoch != self._epoch:
                    continue
                if rows:
                    await self._run(self._table.apply, rows)
            except (KafkaError, OSError) as exc:
                log.warning("reading review.cases failed; retrying", exc_info=exc)
                self._seek_applied()
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                continue
            backoff = 0.1
            if epoch != self._epoch:
                continue  # given up during the write: the partition's rows are dropped again
            async with self._progress:
                for partition, offset in reached.items():
                    self._next[partition] = self._applied[partition] = offset
                self._progress.notify_all()

    def _rows(
        self, batches: dict[TopicPartition, list[Any]]
    ) -> tuple[list[tuple[int, str, bytes | None]], dict[int, int]]:
        """What a read writes, and the offset each owned partition is read to then."""
        rows: list[tuple[int, str, bytes | None]] = []
        reached = dict(self._next)
        for tp, records in batches.items():
            partition = tp.partition
            if partition not in reached:
                continue
            restore_end = self._restore_end.get(partition, 0)
            for record in records:
                if record.offset < reached[partition] or record.key is None:
                    continue
                key = record.key.decode()
                if record.offset >= restore_end and key.startswith(OWN_KEYS):
                    continue
                rows.append((partition, key, record.value))
            reached[partition] = max(reached[partition], records[-1].offset + 1)
        return rows, reached
