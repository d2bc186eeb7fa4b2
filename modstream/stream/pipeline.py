"""The hot path: the stages' topics consumed and produced in batches on plain aiokafka,
with exactly-once output by Kafka transactions (or at-least-once, by setting).

Faust's per-record stream machinery cost ~90% of the worker's time on text events (issue
13), and its exactly-once mode has open duplicate and loss reports (``notes/faust.md``), so
the stages' topics bypass it; Faust stays the application around them (web, timers, the
worker's services and CLI).

Every owned partition is a *lane*: its records are processed in batches (concurrently, up
to a bound, except where order matters), and each finished batch is a *completion* that
holds the records it produced. A lane's committer writes completions in one transaction
with the partition's new offset (``progress.PartitionProgress``: in-order offsets, done
records beyond them in the metadata), so a record's outputs become visible to
``read_committed`` consumers exactly when its offset is committed. The worker has one
transactional producer (Kafka's exactly-once v2, KIP-447): each transaction takes every
lane's waiting completions and offsets at once, so a worker owning 8 partitions commits
once per round instead of 8 times. The offsets are committed as the consumer's group
member (its generation, ``compat.commit_offsets_as_member``): after a rebalance, a worker
that lost a partition cannot commit for it; the next owner reads offsets only once stable
(``compat.committed_offsets``), after whatever transaction held them has ended.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Container, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition

from modstream.contracts import DLQ_TOPIC, DeadLetter, dumps
from modstream.ingest.urls import redact_urls
from modstream.settings import Settings
from modstream.stages.metrics import PipelineMetrics
from modstream.stages.ports import Record, guarded
from modstream.stream import client, compat
from modstream.stream.output import partition_of_key
from modstream.stream.progress import PartitionProgress
from modstream.stream.topics import MAX_DEAD_LETTER_BYTES

log = logging.getLogger("modstream.stream")
#: Errors that are the record's fault, not the broker's: retrying cannot help.
RECORD_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError)
MAX_BACKOFF_S = 1.0  # a broker back from an outage is used within a second
METADATA_PACE_S = 0.5  # a producer's metadata refreshes, at most this often (compat)
COMMIT_TIMEOUT_S = 30.0
RESTART_TIMEOUT_S = 5.0  # a failed transaction's producer replaced at once, if it can be
MARKER_RETRY_S = 0.002  # a record refused while the last commit's markers are written


@dataclass(frozen=True)
class Route:
    """How the records of one topic are processed."""

    stage: str
    process: Callable[[Sequence[Record]], Awaitable[None]]
    #: Batches of one partition processed at once; 1 keeps the partition's order.
    concurrency: int = 1
    #: Records that may take long (a media URL): each becomes its own batch, so that a hung
    #: server holds up only the events that carry its media. A hint; it must be cheap.
    alone: Callable[[Record], bool] = lambda record: False
    #: Called with the partition number before a newly owned partition is processed, and
    #: after one is given up (the decide stage's per-uploader state).
    assigned: Callable[[int], Awaitable[None]] | None = None
    revoked: Callable[[int], None] | None = None


class KafkaRecord:
    """A consumed record as the stages take it (``stages.ports.Record``): aiokafka's, with
    the timestamp in seconds."""

    __slots__ = ("key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.topic = record.topic
        self.partition = record.partition
        self.offset = record.offset
        self.key = record.key
        self.value = record.value
        self.timestamp = record.timestamp / 1000


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone (a compacted changelog's forgotten key)
    partition: int | None


@dataclass
class Completion:
    """A processed batch: its records and everything it produced, sent at commit."""

    records: Sequence[Record]
    outputs: list[Outgoing] = field(default_factory=list)
    delivered: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def settle(self) -> None:
        """Its records are in Kafka (a refused one as a dead letter)."""
        if not self.delivered.done():
            self.delivered.set_result(None)


_CURRENT: contextvars.ContextVar[Completion] = contextvars.ContextVar("completion")


class ProduceFailed(KafkaError):
    """Some records were refused for what they are; ``failed`` are their indices."""

    def __init__(self, failed: dict[int, BaseException]) -> None:
        super().__init__(f"{len(failed)} records refused")
        self.failed = failed


class PipelineOutput:
    """``modstream.stages.ports.Output`` for the lanes: records join the completion of the
    batch being processed (a context variable set by the lane's task) and reach Kafka when
    the lane commits it; the future completes then."""

    def __init__(self, settings: Settings, metrics: PipelineMetrics) -> None:
        self.settings = settings
        self.metrics = metrics

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> asyncio.Future[Any]:
        return self.append(self.settings.topic(topic), key, value, partition)

    def append(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None
    ) -> asyncio.Future[None]:
        """Add a record (``topic`` is the full name) to the batch being processed."""
        completion = _CURRENT.get()
        completion.outputs.append(Outgoing(topic, key, value, partition))
        return completion.delivered

    async def dead_letter(self, record: Record, error: str, reason: str, stage: str) -> None:
        error = redact_urls(error)  # the reason leaves the process; the original bytes are kept
        letter = DeadLetter.of(
            record.value,
            record.key,
            error,
            stage=stage,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            failed_at=time.time(),
        )
        self.metrics.dead_letters.labels(stage=stage, reason=reason).inc()
        log.warning(
            "dead letter",
            extra={"topic": record.topic, "offset": record.offset, "error": error[:300]},
        )
        await self.send(DLQ_TOPIC, record.key, dumps(letter))

    def refused(self, out: Outgoing, error: BaseException, stage: str) -> Outgoing:
        """A dead letter for a record Kafka refused to take (too large for its topic)."""
        dlq = self.settings.topic(DLQ_TOPIC)
        if out.topic == dlq and orjson.loads(out.value or b"{}").get("original_b64") == "":
            # Not even a bare dead letter fits: stop here (the lane reports itself broken)
            # rather than commit past an event that is neither written nor dead-lettered.
            raise RuntimeError(f"the dead-letter topic refuses a bare dead letter: {error!r}")
        reason = f"output refused by Kafka: {error!r}"
        self.metrics.dead_letters.labels(stage=stage, reason="output_refused").inc()
        log.warning("output refused", extra={"topic": out.topic, "error": reason[:300]})
        letter = DeadLetter.of(
            # A refused dead letter: its own size is the problem, keep only the reason.
            b"" if out.topic == dlq else out.value,
            out.key,
            reason if out.topic != dlq else f"{reason}; the record itself is not kept",
            stage=stage,
            topic=out.topic,
            partition=-1 if out.partition is None else out.partition,
            offset=-1,  # never written
            failed_at=time.time(),
        )
        return Outgoing(dlq, out.key, dumps(letter), None)


class Committer:
    """Writes a lane's completions and its offset, atomically or not."""

    async def commit(self, outputs: Sequence[Outgoing], offset: OffsetAndMetadata) -> None:
        raise NotImplementedError

    async def landed(self, offset: OffsetAndMetadata) -> bool:
        """After a commit that failed without saying how far it got: whether it committed
        after all (at-least-once cannot tell, and redoes it)."""
        return False


@dataclass
class Handed:
    """Records handed to a producer: each one's delivery future (in the order given), and
    where it went, if in a batch shared with others."""

    futures: list[asyncio.Future[Any]]
    shared_batch: list[tuple[str, int] | None]

    def isolate(self, failed: dict[int, BaseException], alone: set[tuple[str, int]]) -> bool:
        """After Kafka refused records: whether any of them shared a batch (Kafka judges a
        batch's size as a whole, so the refusal does not say which record it was). Their
        partitions are then added to ``alone``, and the caller sends again: one record per
        batch there, so that each refusal names its own record and sinks no neighbour."""
        suspects = {self.shared_batch[i] for i in failed} - {None}
        alone.update(place for place in suspects if place is not None)
        return bool(suspects)


async def _send(
    producer: AIOKafkaProducer,
    outputs: Sequence[Outgoing],
    alone: Container[tuple[str, int]] = frozenset(),
) -> Handed:
    """Hand every record to the producer, one batch per partition (``alone``: one batch per
    record): aiokafka's per-record ``send`` (metadata wait, partitioner, a future each) was
    most of a transaction's time on the event loop. A batch's records share its future. A
    record whose partition is the producer's choice (no key, no partition) goes through
    ``send``; one refused at once (over the producer's own size limit) gets a future
    holding its error."""
    futures: list[asyncio.Future[Any] | None] = [None] * len(outputs)
    shared: list[tuple[str, int] | None] = [None] * len(outputs)
    by_partition: dict[tuple[str, int], list[int]] = {}
    partitions: dict[str, list[int]] = {}
    for index, out in enumerate(outputs):
        partition = out.partition
        if partition is None and out.key is not None:
            if out.topic not in partitions:
                partitions[out.topic] = sorted(await producer.partitions_for(out.topic))
            partition = partition_of_key(out.key, partitions[out.topic])
        if partition is None:
            futures[index] = await _send_one(producer, out)
        else:
            by_partition.setdefault((out.topic, partition), []).append(index)

    async def flush(place: tuple[str, int], builder: Any, members: list[int]) -> None:
        sent = await producer.send_batch(builder, place[0], partition=place[1])
        for member in members:
            futures[member] = sent
            shared[member] = place if len(members) > 1 else None

    for place, indices in by_partition.items():
        builder = producer.create_batch()
        members: list[int] = []
        for index in indices:
            out = outputs[index]
            if members and place in alone:
                await flush(place, builder, members)
                builder, members = producer.create_batch(), []
            if builder.append(key=out.key, value=out.value, timestamp=None) is None:
                if members:  # full: sent, and the record starts the next batch
                    await flush(place, builder, members)
                    builder, members = producer.create_batch(), []
                if builder.append(key=out.key, value=out.value, timestamp=None) is None:
                    futures[index] = await _send_one(producer, out)  # larger than a batch
                    continue
            members.append(index)
        if members:
            await flush(place, builder, members)
    handed = [future for future in futures if future is not None]
    assert len(handed) == len(outputs)
    return Handed(handed, shared)


async def _send_one(producer: AIOKafkaProducer, out: Outgoing) -> asyncio.Future[Any]:
    try:
        sent: asyncio.Future[Any] = await producer.send(
            out.topic, out.value, key=out.key, partition=out.partition
        )
    except RECORD_ERRORS as exc:
        sent = asyncio.get_running_loop().create_future()
        sent.set_exception(exc)
    return sent


async def _delivered(futures: list[asyncio.Future[Any]]) -> None:
    """Wait for every record; raise ``ProduceFailed`` naming the records refused for what
    they are, else the first broker error."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    failed = {i: r for i, r in enumerate(results) if isinstance(r, RECORD_ERRORS)}
    if failed:
        raise ProduceFailed(failed)
    for result in results:
        if isinstance(result, BaseException):
            raise result


class TransactionAborted(KafkaError):
    """What a lane handed over was not written, for nothing of its own known: a neighbour's
    record Kafka refused (dead-lettered now), or a batch Kafka refused whose records are now
    sent one by one to find which (``Handed.isolate``). Sent again at once."""


@dataclass
class _Waiting:
    tp: TopicPartition
    outputs: Sequence[Outgoing]
    offset: OffsetAndMetadata
    committed: asyncio.Future[None]


class WorkerTransactions:
    """The worker's one transactional producer (``Settings.transactional_id``). Lanes hand
    it their finished batches with their partition's offset; each transaction takes all
    that is waiting (a group commit), and whatever arrives meanwhile goes in the next."""

    def __init__(self, settings: Settings, group_id: str, consumer: AIOKafkaConsumer) -> None:
        self.settings = settings
        self.group_id = group_id
        self.consumer = consumer
        self._producer: AIOKafkaProducer | None = None
        self._waiting: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._busy = asyncio.Lock()  # one transaction, or one settling, at a time
        self._task: asyncio.Task[None] | None = None
        self._alone: set[tuple[str, int]] = set()  # see ``Handed.isolate``

    async def start(self) -> None:
        """Fence this worker's former self (the same instance id): what it left open is
        aborted."""
        async with self._busy:
            await self._started()
        self._task = asyncio.ensure_future(self._run())

    def for_partition(self, tp: TopicPartition) -> Committer:
        return _LaneOfWorker(self, tp)

    async def commit(
        self, tp: TopicPartition, outputs: Sequence[Outgoing], offset: OffsetAndMetadata
    ) -> None:
        waiting = _Waiting(tp, outputs, offset, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._wake.set()
        try:
            # Shielded: a lane that stops waiting (its commit timed out) leaves a transaction
            # it is in to finish or fail as a whole, and asks ``landed`` which it was.
            await asyncio.shield(waiting.committed)
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._waiting.remove(waiting)  # not in a transaction yet: never sent
            raise

    async def landed(self, tp: TopicPartition, offset: OffsetAndMetadata) -> bool:
        """Whether a commit that failed without saying how far it got landed after all. A
        new producer under the worker's id first settles the old transaction (aborted if
        still open, finished if being committed); the stable fetch of the offset committed
        in it then says. An offset at or past it committed by the partition's next owner
        (this worker lost it meanwhile) answers the same: not to be sent again."""
        async with self._busy:
            await self._started()
        committed = (await compat.committed_offsets(self.consumer, [tp])).get(tp)
        return committed is not None and committed.offset >= offset.offset

    async def withdraw(self, partitions: Sequence[TopicPartition]) -> None:
        """Called as ``partitions`` are revoked, before the consumer joins the next
        generation: waits for the transaction in flight to end and drops what still waits
        for them. The offsets of a transaction that straddled the rebalance would be sent
        under the generation the worker has joined by then, which the broker accepts (it
        checks the member, not what it owns), while the partition's next owner may have
        read the older offset already: its batch would then be decided twice."""
        gone = set(partitions)
        async with self._busy:
            for waiting in [w for w in self._waiting if w.tp in gone]:
                self._waiting.remove(waiting)
                waiting.committed.cancel()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for waiting in self._waiting:
            waiting.committed.cancel()
        await self._stop_producer()

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = client.producer(
                self.settings.kafka,
                transactional_id=self.settings.transactional_id,
                transaction_timeout_ms=int(self.settings.transaction_timeout_s * 1000),
                linger_ms=0,  # a commit sends at once: the batch is made already
                # aiokafka's 100 ms retry backoff kept, as it also reconnects at this pace
                # (at 10 ms the producers spun a core while the broker was down); the one
                # refusal that passes in milliseconds is retried sooner (compat).
                max_request_size=MAX_DEAD_LETTER_BYTES,
                max_batch_size=1024 * 1024,
                request_timeout_ms=15000,
            )
            compat.pace_metadata_updates(producer, METADATA_PACE_S)
            compat.retry_marker_waits_soon(producer, MARKER_RETRY_S)
            compat.commit_offsets_as_member(producer, self.consumer)
            self._producer = await client.started(producer)
        return self._producer

    async def _abandon(self) -> None:
        """Drop the producer of a failed transaction and start the next at once: under the
        same id it aborts what the failed one left open, which would otherwise hold back
        ``read_committed`` readers and stable offset fetches until the broker's transaction
        timeout. If the broker does not answer now, the next commit starts it."""
        await self._stop_producer()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(RESTART_TIMEOUT_S):
                await self._started()

    async def _stop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            async with self._busy:
                # Taken under the lock: while ``landed`` holds it, what waits can still be
                # withdrawn by its lane.
                batch, self._waiting = self._waiting, []
                if batch:
                    await self._transact(batch)

    async def _transact(self, batch: list[_Waiting]) -> None:
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                producer = await self._started()
                await producer.begin_transaction()
                handed = await _send(
                    producer, [out for w in batch for out in w.outputs], self._alone
                )
                # Every record's delivery is checked before the commit: aiokafka commits a
                # transaction even when a record in it was refused (measured: the record is
                # silently missing). The offsets go out meanwhile.
                offsets = {w.tp: w.offset for w in batch}
                await asyncio.gather(
                    _delivered(handed.futures),
                    producer.send_offsets_to_transaction(offsets, self.group_id),
                )
                await producer.commit_transaction()
        except ProduceFailed as exc:
            await self._abandon()  # never committed
            if handed.isolate(exc.failed, self._alone):
                for waiting in batch:  # sent again at once, record by record
                    _fail(waiting, TransactionAborted())
                return
            first = 0
            for waiting in batch:
                count = len(waiting.outputs)
                own = {i - first: e for i, e in exc.failed.items() if first <= i < first + count}
                _fail(waiting, ProduceFailed(own) if own else TransactionAborted())
                first += count
        except Exception as exc:
            # Whatever state the transaction is in, the next producer under the same id
            # settles it; the lanes ask whether it landed before they send again.
            await self._abandon()
            for waiting in batch:
                _fail(waiting, exc)
        except BaseException as exc:  # cancelled: the worker stops
            await self._stop_producer()
            for waiting in batch:
                _fail(waiting, KafkaError(repr(exc)))
            raise
        else:
            for waiting in batch:
                if not waiting.committed.done():
                    waiting.committed.set_result(None)


def _fail(waiting: _Waiting, error: Exception) -> None:
    if not waiting.committed.done():
        waiting.committed.set_exception(error)
        waiting.committed.exception()  # retrieved: a lane that stopped waiting logs nothing


class _LaneOfWorker(Committer):
    """A lane's view of the worker's transactions."""

    def __init__(self, transactions: WorkerTransactions, tp: TopicPartition) -> None:
        self.transactions = transactions
        self.tp = tp

    async def commit(self, outputs: Sequence[Outgoing], offset: OffsetAndMetadata) -> None:
        await self.transactions.commit(self.tp, outputs, offset)

    async def landed(self, offset: OffsetAndMetadata) -> bool:
        return await self.transactions.landed(self.tp, offset)


class AtLeastOnceCommitter(Committer):
    """The worker's one producer, flushed before the consumer commits the offset: a crash
    between the two redoes the batch (duplicates, never losses)."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        alone: set[tuple[str, int]],
    ) -> None:
        self.producer = producer
        self.consumer = consumer
        self.tp = tp
        self.alone = alone  # the worker's partitions sent one record per batch (``Handed``)

    async def commit(self, outputs: Sequence[Outgoing], offset: OffsetAndMetadata) -> None:
        handed = await _send(self.producer, outputs, self.alone)
        try:
            await _delivered(handed.futures)
        except ProduceFailed as exc:
            if handed.isolate(exc.failed, self.alone):
                raise TransactionAborted() from exc  # sent again at once, record by record
            raise
        await self.consumer.commit({self.tp: offset})


class Lane:
    """One owned partition: takes its records, processes them in batches, commits in order."""

    def __init__(
        self,
        tp: TopicPartition,
        route: Route,
        progress: PartitionProgress,
        committer: Committer,
        output: PipelineOutput,
        metrics: PipelineMetrics,
    ) -> None:
        self.tp = tp
        self.route = route
        self.progress = progress
        self.committer = committer
        self.output = output
        self.metrics = metrics
        self._work: asyncio.Queue[Sequence[Record]] = asyncio.Queue()
        self._queued = 0  # records waiting in ``_work``
        self._ready: list[Completion] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks = [asyncio.ensure_future(self._processor()) for _ in range(route.concurrency)]
        self._tasks.append(asyncio.ensure_future(self._committer()))

    def take(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        self.metrics.records_consumed.labels(topic=self.tp.topic).inc(len(records))
        fresh = [KafkaRecord(r) for r in records if self.progress.wanted(r.offset)]
        if not fresh:
            return
        self.progress.taken([r.offset for r in fresh])
        self._idle.clear()
        together: list[Record] = []
        groups: list[Sequence[Record]] = [together]
        for record in fresh:
            if self.route.alone(record):
                groups.append([record])
            else:
                together.append(record)
        for group in groups if together else groups[1:]:
            self._queued += len(group)
            self._work.put_nowait(group)

    def full(self, max_queued: int) -> bool:
        return self._queued >= max_queued or not self.progress.has_room()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until everything taken is committed (or the time is up)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _processor(self) -> None:
        while True:
            records = await self._work.get()
            self._queued -= len(records)
            completion = Completion(records)
            token = _CURRENT.set(completion)
            try:
                await guarded(self.route.stage, self._all_or_nothing, records, self.output)
            finally:
                _CURRENT.reset(token)
            self._ready.append(completion)
            self._wake.set()

    async def _all_or_nothing(self, records: Sequence[Record]) -> None:
        """The stage on a batch; if it fails, what it produced in this call is dropped, so
        that a record retried alone (``guarded``) or dead-lettered is not also written by
        the attempt that failed."""
        outputs = _CURRENT.get().outputs
        before = len(outputs)
        try:
            await self.route.process(records)
        except Exception:
            del outputs[before:]
            raise

    @property
    def healthy(self) -> bool:
        """False once the committer has stopped (fenced, or a bug): nothing more commits."""
        return not self._tasks[-1].done()

    async def _committer(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                batch, self._ready = self._ready, []
                if batch:
                    await self._commit(batch)
                if not self._ready and self.progress.in_flight == 0:
                    self._idle.set()
        except Exception:
            log.exception("a partition's committer failed", extra={"topic": self.tp.topic})

    async def _commit(self, batch: list[Completion]) -> None:
        """Commit ``batch`` with the offsets it completes; retried with backoff while the
        broker fails (nothing is committed past it meanwhile); a record refused for what it
        is (too large) becomes a dead letter holding it."""
        self.progress.finished([r.offset for c in batch for r in c.records])
        offset = OffsetAndMetadata(self.progress.committed, self.progress.metadata())
        backoff = 0.1
        uncertain = False  # an attempt failed without saying whether it committed
        while True:
            outputs = [out for completion in batch for out in completion.outputs]
            started = time.perf_counter()
            try:
                async with asyncio.timeout(COMMIT_TIMEOUT_S):
                    if uncertain and await self.committer.landed(offset):
                        where = {"topic": self.tp.topic, "partition": self.tp.partition}
                        # Committed by this lane after all, or by the partition's next owner
                        # (this worker lost it meanwhile): either way, not to be repeated.
                        log.info("a failed commit's offset is committed: not repeated", extra=where)
                    else:
                        await self.committer.commit(outputs, offset)
            except ProduceFailed as exc:
                self._dead_letter_refused(batch, exc.failed)
                continue
            except TransactionAborted:
                continue
            except (KafkaError, TimeoutError, OSError) as exc:
                uncertain = True
                self.metrics.commit_failures.inc()
                log.warning(
                    "commit failed; retrying",
                    extra={"topic": self.tp.topic, "partition": self.tp.partition},
                    exc_info=exc,
                )
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                continue
            self.metrics.commit_seconds.observe(time.perf_counter() - started)
            produced = collections.Counter(out.topic for out in outputs)
            for topic, count in produced.items():
                self.metrics.records_produced.labels(topic=topic).inc(count)
            for completion in batch:
                completion.settle()
            return

    def _dead_letter_refused(
        self, batch: list[Completion], failed: dict[int, BaseException]
    ) -> None:
        """Each record Kafka refused for what it is becomes a dead letter holding it (its
        destination and the reason): its neighbours go out as they are, and nothing is lost.
        A dead letter refused in turn is replaced by one without the record's bytes."""
        index = 0
        for completion in batch:
            for position, out in enumerate(completion.outputs):
                error = failed.get(index)
                index += 1
                if error is not None:
                    completion.outputs[position] = self.output.refused(out, error, self.route.stage)


class StagePipeline:
    """The consumer of every stage topic, its lanes, and their commits."""

    def __init__(
        self,
        settings: Settings,
        routes: dict[str, Route],
        output: PipelineOutput,
        metrics: PipelineMetrics,
    ) -> None:
        self.settings = settings
        self.routes = routes
        self.output = output
        self.metrics = metrics
        self.group_id = settings.app_id
        self.lanes: dict[TopicPartition, Lane] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None  # at-least-once only
        self._alone: set[tuple[str, int]] = set()  # at-least-once: see ``Handed.isolate``
        self._transactions: WorkerTransactions | None = None  # exactly-once only
        self._poller: asyncio.Task[None] | None = None
        self.max_queued = 4 * settings.batch_size
        self._lag_reported: set[tuple[str, str]] = set()
        self.broken: BaseException | None = None

    @property
    def consumer(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "pipeline not started"
        return self._consumer

    async def start(self) -> None:
        self._consumer = await client.started(
            client.consumer(
                self.settings.kafka,
                group_id=self.group_id,
                group_instance_id=self.settings.group_instance_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                max_partition_fetch_bytes=4 * 1024 * 1024,
                # A read_committed fetch may find nothing committed yet; the broker then
                # holds it this long (500 ms by default: most of a latency budget).
                fetch_max_wait_ms=50,
                session_timeout_ms=int(self.settings.session_timeout_s * 1000),
                heartbeat_interval_ms=int(self.settings.session_timeout_s * 1000 / 5),
                rebalance_timeout_ms=60000,
            )
        )
        if self.settings.processing_guarantee == "at_least_once":
            self._producer = await client.started(
                client.producer(
                    self.settings.kafka,
                    linger_ms=5,
                    acks="all",
                    max_request_size=MAX_DEAD_LETTER_BYTES,
                    max_batch_size=1024 * 1024,
                )
            )
            compat.pace_metadata_updates(self._producer, METADATA_PACE_S)
        else:
            self._transactions = WorkerTransactions(self.settings, self.group_id, self.consumer)
            await self._transactions.start()
        self.consumer.subscribe(list(self.routes), listener=_Listener(self))
        self._poller = asyncio.ensure_future(self._poll())

    @property
    def running(self) -> bool:
        """Polling, every lane able to commit, and every owned partition taken over."""
        polling = self._poller is not None and not self._poller.done()
        return polling and self.broken is None and all(lane.healthy for lane in self.lanes.values())

    def measure_lag(self) -> None:
        """Records each owned partition holds beyond what this worker has committed."""
        consumer = self.consumer
        for tp, lane in list(self.lanes.items()):
            highwater = consumer.highwater(tp)
            if highwater is not None:  # None until the first fetch of a new assignment
                lag = max(0, highwater - lane.progress.committed)
                self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    lag
                )
        owned = {(tp.topic, str(tp.partition)) for tp in self.lanes}
        for labels in self._lag_reported - owned:  # moved to another worker
            self.metrics.consumer_lag.remove(*labels)
        self._lag_reported = owned

    async def stop(self) -> None:
        """Finish and commit what is in flight (bounded), then leave."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        await self._close_lanes(list(self.lanes), drain_s=self.settings.drain_timeout_s)
        if self._transactions is not None:
            await self._transactions.close()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def _poll(self) -> None:
        consumer = self.consumer
        backoff = 0.1
        while True:
            try:
                batches = await consumer.getmany(
                    timeout_ms=100, max_records=self.settings.batch_size
                )
            except KafkaError as exc:  # the client retries connections itself; this is rare
                log.warning("fetching failed; retrying", exc_info=exc)
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                continue
            backoff = 0.1
            for tp, records in batches.items():
                lane = self.lanes.get(tp)
                if lane is not None:
                    lane.take(records)
            full = [tp for tp, lane in self.lanes.items() if lane.full(self.max_queued)]
            paused = consumer.paused()
            if full:
                consumer.pause(*full)
            resumable = [tp for tp in paused if tp not in full]
            if resumable:
                consumer.resume(*resumable)
            if full and not batches:
                await asyncio.sleep(0.01)  # everything paused: getmany returns at once

    async def assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """Take over newly assigned partitions; if that fails (the broker, a strike changelog
        that cannot be read), the worker reports itself not ready rather than leave a
        partition it owns unprocessed."""
        try:
            await self._take_over(partitions)
        except Exception as exc:
            log.exception("taking over partitions failed")
            self.broken = exc

    async def _take_over(self, partitions: Sequence[TopicPartition]) -> None:
        new = [tp for tp in partitions if tp not in self.lanes]
        # Read once stable: a transaction of the previous owner that holds these offsets
        # (committing, or left open by a crash) has ended first.
        committed = await compat.committed_offsets(self.consumer, new)
        for tp in new:
            route = self.routes[tp.topic]
            if route.assigned is not None:
                await route.assigned(tp.partition)
            found = committed.get(tp)
            if found is not None:
                skip = PartitionProgress.skipped(found.offset, found.metadata)
                progress = PartitionProgress(found.offset, skip)
                self.consumer.seek(tp, found.offset)
            else:
                await self.consumer.seek_to_beginning(tp)
                progress = PartitionProgress(0)
            committer = self._new_committer(tp)
            self.lanes[tp] = Lane(tp, route, progress, committer, self.output, self.metrics)
        self.metrics.partition_changes.labels(change="assigned").inc(len(new))
        log.info(
            "partitions assigned", extra={"partitions": [f"{t.topic}:{t.partition}" for t in new]}
        )

    async def revoked(self, partitions: Sequence[TopicPartition]) -> None:
        self.metrics.partition_changes.labels(change="revoked").inc(len(partitions))
        await self._close_lanes(
            [tp for tp in partitions if tp in self.lanes], drain_s=self.settings.drain_timeout_s
        )
        if self._transactions is not None:  # nothing of theirs may commit after the rejoin
            await self._transactions.withdraw(partitions)

    async def _close_lanes(self, partitions: list[TopicPartition], drain_s: float) -> None:
        lanes = [self.lanes.pop(tp) for tp in partitions]
        # In-flight work gets a bounded time to finish and commit; the rest is redone by
        # the next owner (from the committed offset, skipping what is marked done).
        await asyncio.gather(*(lane.drained(drain_s) for lane in lanes))
        await asyncio.gather(*(lane.close() for lane in lanes))
        for tp in partitions:
            route = self.routes[tp.topic]
            if route.revoked is not None:
                route.revoked(tp.partition)

    def _new_committer(self, tp: TopicPartition) -> Committer:
        if self._transactions is not None:
            return self._transactions.for_partition(tp)
        assert self._producer is not None
        return AtLeastOnceCommitter(self._producer, self.consumer, tp, self._alone)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, pipeline: StagePipeline) -> None:
        self.pipeline = pipeline

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.pipeline.revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.pipeline.assigned(list(assigned))
