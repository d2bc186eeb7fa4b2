"""A whole compacted topic mirrored into this worker's memory, kept up to date.

Every worker reads every partition from the beginning (or from a snapshot's offsets) without
a consumer group, applies each record in order, and keeps tailing: a change is live within
one poll (~0.2 s). ``ready`` is set once the worker has caught up with the offsets the topic
had at start, so nothing is decided on half-loaded state. Only committed records are read:
the review stage writes to these topics in transactions, and an aborted one never happened.

The bank (``banksync``), the bank controls and the reviewers' standing verdicts are replicas.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from modstream.contracts import ContractError
from modstream.settings import KafkaAccess
from modstream.stages.metrics import PipelineMetrics
from modstream.stream.client import consumer, started, topic_partitions

log = logging.getLogger("modstream.replica")


class TopicReplica(Service):
    """The mechanism; subclasses say what a record does (``apply_record``) and may start
    from somewhere other than the beginning (``starting_positions``)."""

    def __init__(self, kafka: KafkaAccess, topic: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kafka = kafka
        self.topic = topic
        self.ready = asyncio.Event()
        self.applied = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._targets: dict[TopicPartition, int] = {}
        self._positions: dict[TopicPartition, int] = {}  # next offset to apply, per partition

    def apply_record(self, key: bytes | None, value: bytes | None) -> None:
        raise NotImplementedError

    async def starting_positions(self, partitions: list[TopicPartition]) -> dict[int, int]:
        """Where to start reading each partition (by number); missing ones from offset 0."""
        return {}

    def after_batch(self, applied: int) -> None:
        """Called after each fetched batch was applied."""

    def caught_up(self) -> None:
        """Called once, when the replica has what the topic had at start."""

    async def on_start(self) -> None:
        self._consumer = await started(
            consumer(
                self.kafka,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                max_poll_records=2000,
            )
        )
        partitions = await topic_partitions(self._consumer, self.topic)
        self._consumer.assign(partitions)
        starting = await self.starting_positions(partitions)
        for tp in partitions:
            self._positions[tp] = starting.get(tp.partition, 0)
            self._consumer.seek(tp, self._positions[tp])
        self._targets = {
            tp: off
            for tp, off in (await self._consumer.end_offsets(partitions)).items()
            if off > self._positions[tp]
        }
        log.info("replication started", extra={"topic": self.topic, "partitions": len(partitions)})
        self._check_ready()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    @Service.task
    async def _tail(self) -> None:
        assert self._consumer is not None
        while not self.should_stop:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    self.apply_record(record.key, record.value)
                    self._positions[tp] = record.offset + 1
                self.after_batch(len(records))
                await asyncio.sleep(0)  # let the pipeline run between large batches
            for tp, target in list(self._targets.items()):
                if await self._consumer.position(tp) >= target:
                    del self._targets[tp]
            self._check_ready()

    async def reached(self, partition: int, offset: int, timeout_s: float = 10.0) -> bool:
        """Wait until the record at ``offset`` of ``partition`` is applied: a process that
        wrote it reads its own write. False if that takes over ``timeout_s``."""
        tp = TopicPartition(self.topic, partition)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self._positions.get(tp, 0) <= offset:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def _check_ready(self) -> None:
        if not self.ready.is_set() and not self._targets:
            self.ready.set()
            self.caught_up()


class KeyedState(Protocol):
    """State kept by string key: ``apply`` raises ContractError (changing nothing) for a
    record it cannot take."""

    def apply(self, key: str, value: bytes | None) -> None: ...


class StateReplica(TopicReplica):
    """A replica into a ``KeyedState`` (bank controls, human verdicts): a record it cannot
    read is counted as a dead letter of stage ``replica`` and skipped."""

    def __init__(
        self,
        state: KeyedState,
        kafka: KafkaAccess,
        topic: str,
        metrics: PipelineMetrics,
        **kwargs: Any,
    ) -> None:
        super().__init__(kafka, topic, **kwargs)
        self.store = state
        self.metrics = metrics

    def apply_record(self, key: bytes | None, value: bytes | None) -> None:
        try:
            if key is None:
                raise ContractError("record without a key")
            self.store.apply(key.decode(), value)
        except Exception as exc:  # a record's failure of any kind is its own: a replica
            # stopped on one record would serve stale state to every decision after it
            self.metrics.dead_letters.labels(stage="replica", reason="invalid_record").inc()
            log.warning(
                "replicated record ignored",
                extra={"topic": self.topic, "key": repr(key)[:200], "error": str(exc)[:300]},
            )
            return
        self.applied += 1

    def caught_up(self) -> None:
        log.info("replica loaded", extra={"topic": self.topic, "applied": self.applied})
